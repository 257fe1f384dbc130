"""Frames stored in the last 24 h (to 10 minutes) and the newest frame's key, per camera, for
the status page.

Fed by a post-store hook (one count per stored frame) and seeded once at start by listing
each camera's folders of today and yesterday (UTC): no scan of months of frames, ever.
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lyoncam_daemon.storage import StoredFrame, parse_frame_stem, tree
from lyoncam_daemon.storage.filesystem import FilesystemStorage
from lyoncam_daemon.storage.layout import day_prefix

WINDOW_S = 24 * 3600.0
#: Frames are counted per 10-minute bucket: the 24 h count may include up to 10 minutes more.
BUCKET_S = 600.0


class _Buckets:
    """Frames per bucket over the window, in fixed memory (about 0.4 KB a camera): a ring
    of counts where slot `b % slots` counts bucket `b`, for the `slots` buckets up to the
    newest one seen. Keeping every timestamp grew by a float per frame, forever when nobody
    opened the status page; a bucket number beside each count cost 0.6 KB a camera more."""

    __slots__ = ("counts", "newest")

    def __init__(self, slots: int) -> None:
        self.counts = array("H", bytes(2 * slots))  # at most 60 frames in 10 minutes
        self.newest = -1  # the newest bucket counted; the ring holds (newest - slots, newest]

    def add(self, when: float) -> None:
        b = int(when // BUCKET_S)
        slots = len(self.counts)
        if b > self.newest:
            # The slots of the buckets after the newest, up to b, held older buckets.
            for gone in range(max(self.newest + 1, b - slots + 1), b + 1):
                self.counts[gone % slots] = 0
            self.newest = b
        elif b <= self.newest - slots:
            return  # older than the window the ring has moved on to
        self.counts[b % slots] += 1

    def count(self, now: float, window_s: float) -> int:
        slots = len(self.counts)
        first = max(int((now - window_s) // BUCKET_S), self.newest - slots + 1)
        last = min(int(now // BUCKET_S), self.newest)
        return sum(self.counts[b % slots] for b in range(first, last + 1))


class RecentFrames:
    def __init__(self, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.window_s = window_s
        self.clock = clock
        self._slots = math.ceil(window_s / BUCKET_S) + 1
        self._counts: dict[str, _Buckets] = {}
        self._latest: dict[str, tuple[float, str]] = {}

    async def hook(self, stored: StoredFrame) -> None:
        """The post-store hook (storage.StoreHook)."""
        self.add(stored.camera_id, stored.captured_at.timestamp(), stored.key)

    def add(self, camera_id: str, when: float, key: str) -> None:
        self._count(camera_id, when)
        self.add_latest(camera_id, when, key)

    def _count(self, camera_id: str, when: float) -> None:
        buckets = self._counts.get(camera_id)
        if buckets is None:
            buckets = self._counts[camera_id] = _Buckets(self._slots)
        buckets.add(when)

    def count(self, camera_id: str) -> int:
        buckets = self._counts.get(camera_id)
        return buckets.count(self.clock(), self.window_s) if buckets is not None else 0

    def latest_key(self, camera_id: str) -> str | None:
        entry = self._latest.get(camera_id)
        return entry[1] if entry else None

    def seed(self, storage: FilesystemStorage, camera_ids: Iterable[str]) -> None:
        """Blocking (a few directory listings per camera): call it in a thread."""
        now = datetime.fromtimestamp(self.clock(), UTC)
        horizon = self.clock() - self.window_s
        for cid in camera_ids:
            for when in _stored_times(storage.data_dir, cid, now):
                if when >= horizon:  # added to what a hook may already have counted
                    self._count(cid, when)
            latest = storage.find_latest(cid)
            if latest is not None:
                self.add_latest(cid, latest.captured_at.timestamp(), latest.key)

    def add_latest(self, camera_id: str, when: float, key: str) -> None:
        if camera_id not in self._latest or when >= self._latest[camera_id][0]:
            self._latest[camera_id] = (when, key)


def _stored_times(data_dir: Path, camera_id: str, now: datetime) -> list[float]:
    """Capture times of the complete frames (sidecar present) of today and yesterday."""
    times: list[float] = []
    for moment in (now - timedelta(days=1), now):
        folder = tree.real_folder(data_dir, day_prefix(camera_id, moment))
        if folder is None:
            continue  # none, or reached through a link (storage/tree.py)
        names = [p.name for p in tree.files(folder)]
        for name in names:
            if name.startswith(".") or not name.endswith(".json"):
                continue
            parsed = parse_frame_stem(name.removesuffix(".json"))
            if parsed is not None and parsed[0] == camera_id:
                times.append(parsed[1].timestamp())
    return times
