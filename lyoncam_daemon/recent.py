"""Frames stored in the last 24 h and the newest frame's key, per camera, for the status page.

Fed by a post-store hook (one append per stored frame) and seeded once at start by listing
each camera's folders of today and yesterday (UTC): no scan of months of frames, ever.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lyoncam_daemon.storage import StoredFrame, parse_frame_stem
from lyoncam_daemon.storage.filesystem import FilesystemStorage
from lyoncam_daemon.storage.layout import day_prefix

WINDOW_S = 24 * 3600.0


class RecentFrames:
    def __init__(self, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.window_s = window_s
        self.clock = clock
        self._times: dict[str, deque[float]] = {}
        self._latest: dict[str, tuple[float, str]] = {}

    async def hook(self, stored: StoredFrame) -> None:
        """The post-store hook (storage.StoreHook)."""
        self.add(stored.camera_id, stored.captured_at.timestamp(), stored.key)

    def add(self, camera_id: str, when: float, key: str) -> None:
        """A frame just stored: frames arrive in time order, so an append keeps it sorted."""
        self._times.setdefault(camera_id, deque()).append(when)
        self.add_latest(camera_id, when, key)

    def count(self, camera_id: str) -> int:
        times = self._times.get(camera_id)
        if not times:
            return 0
        horizon = self.clock() - self.window_s
        while times and times[0] < horizon:
            times.popleft()
        return len(times)

    def latest_key(self, camera_id: str) -> str | None:
        entry = self._latest.get(camera_id)
        return entry[1] if entry else None

    def seed(self, storage: FilesystemStorage, camera_ids: Iterable[str]) -> None:
        """Blocking (a few directory listings per camera): call it in a thread."""
        now = datetime.fromtimestamp(self.clock(), UTC)
        horizon = self.clock() - self.window_s
        for cid in camera_ids:
            found = [t for t in _stored_times(storage.data_dir, cid, now) if t >= horizon]
            # Seeded before the cameras start; merged anyway, should a hook have run first.
            self._times[cid] = deque(sorted([*found, *self._times.get(cid, ())]))
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
        folder = data_dir / day_prefix(camera_id, moment)
        try:
            names = [p.name for p in folder.iterdir()]
        except OSError:
            continue
        for name in names:
            if name.startswith(".") or not name.endswith(".json"):
                continue
            parsed = parse_frame_stem(name.removesuffix(".json"))
            if parsed is not None and parsed[0] == camera_id:
                times.append(parsed[1].timestamp())
    return times
