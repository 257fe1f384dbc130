"""Keeping the disk from filling: the retention policy, its periodic pass, the free-space guard.

- `plan_days` / `plan_frames` are pure: given what is on disk, what to delete. Oldest whole
  days go first; a camera's newest day is never deleted whole, and its newest frame never,
  so a restart always finds the frame it dedups against.
- `RetentionPass` applies a plan to the filesystem store, in a thread (never on the event
  loop), sidecar before JPEG: a frame interrupted half-way is a JPEG without sidecar, which
  no reader trusts (the store's own recovery rule) and the next pass deletes.
- `FreeSpaceGuard` wraps a Storage: below `min_free_bytes` of free space it refuses frames
  with `StoragePaused` (a StoreError the camera counts as a write error) and resumes by
  itself once space returns. Free space is read at most once a second (statvfs is cheap,
  but not per frame on a loaded disk).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import structlog

from lyoncam_daemon.config import CAMERA_ID_RE, RetentionSettings
from lyoncam_daemon.storage import Frame, Storage, StoredFrame, StoreError, parse_frame_stem, tree
from lyoncam_daemon.storage.atomic import TMP_MARK
from lyoncam_daemon.storage.variety import CellFrame, CellKey, CellSource, plan_variety

# -- the policy (pure) ----------------------------------------------------------------------


@dataclass(frozen=True)
class Day:
    """One camera's folder of one UTC day."""

    camera: str
    day: date
    path: Path
    bytes: int = 0


@dataclass(frozen=True)
class FrameFile:
    """One stored frame: its JPEG (the sidecar is beside it) and both files' bytes."""

    camera: str
    captured: datetime
    jpg: Path
    bytes: int = 0


def _age_cutoff(now: datetime, max_age_days: float | None) -> datetime | None:
    return None if max_age_days is None else now - timedelta(days=max_age_days)


def plan_days(days: Sequence[Day], now: datetime, policy: RetentionSettings
              ) -> tuple[list[Day], int]:
    """Whole days to delete, oldest first, and the bytes still over `max_bytes` after them.

    A day goes when all of it is older than `max_age_days`, or while the total is over
    `max_bytes`. Each camera's newest day is left out: it holds the camera's newest frame.
    """
    newest: dict[str, date] = {}
    for d in days:
        newest[d.camera] = max(newest.get(d.camera, d.day), d.day)
    cutoff = _age_cutoff(now, policy.max_age_days)
    total = sum(d.bytes for d in days)
    doomed: list[Day] = []
    for d in sorted((d for d in days if d.day < newest[d.camera]),
                    key=lambda d: (d.day, d.camera)):
        day_end = datetime(d.day.year, d.day.month, d.day.day, tzinfo=UTC) + timedelta(days=1)
        too_old = cutoff is not None and day_end <= cutoff
        too_big = policy.max_bytes is not None and total > policy.max_bytes
        if not (too_old or too_big):
            break  # sorted oldest first: every later day is younger and fits
        doomed.append(d)
        total -= d.bytes
    excess = total - policy.max_bytes if policy.max_bytes is not None else 0
    return doomed, max(0, excess)


def plan_frames(frames: Sequence[FrameFile], now: datetime, policy: RetentionSettings,
                excess: int) -> list[FrameFile]:
    """Single frames to delete from the days `plan_days` keeps (each camera's newest day).

    Needed only when whole days were not enough: a camera silent for longer than
    `max_age_days`, or `max_bytes` smaller than the newest days. Oldest first, never a
    camera's newest frame.
    """
    newest: dict[str, datetime] = {}
    for f in frames:
        newest[f.camera] = max(newest.get(f.camera, f.captured), f.captured)
    cutoff = _age_cutoff(now, policy.max_age_days)
    doomed: list[FrameFile] = []
    for f in sorted((f for f in frames if f.captured < newest[f.camera]),
                    key=lambda f: (f.captured, f.camera)):
        too_old = cutoff is not None and f.captured < cutoff
        if not (too_old or excess > 0):
            break
        doomed.append(f)
        excess -= f.bytes
    return doomed


# -- the pass (blocking: runs in a thread) --------------------------------------------------


@dataclass(frozen=True)
class PassResult:
    days: int = 0
    frames: int = 0
    freed_bytes: int = 0
    #: With keep_variety: frames deleted per (camera, daypart, weather) cell.
    cells: tuple[tuple[CellKey, int], ...] = ()
    #: With keep_variety: bytes still over max_bytes, every cell being down to its floor.
    short_bytes: int = 0


class RetentionPass:
    """Applies the policy to a filesystem data_dir. `run()` blocks: call it in a thread.

    Symlinks in the tree are skipped (storage/tree.py): nothing outside data_dir is ever
    deleted. Sizes of days before yesterday are cached between passes (nothing writes there any
    more), so a pass over a season of frames stats only the two newest days per camera.
    """

    def __init__(self, data_dir: Path, policy: RetentionSettings,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 cells: CellSource | None = None, floor: int = 20) -> None:
        self.data_dir = data_dir
        self.policy = policy
        self.clock = clock
        #: Each frame's cell, for `keep_variety` (None: oldest days first).
        self.cells = cells
        #: A cell is never trimmed below this many frames (the report's `thin` mark).
        self.floor = floor
        #: Set to end a pass early (daemon stopping); the current frame is finished first.
        self.cancel = threading.Event()
        self._sizes: dict[Path, int] = {}
        self.total = PassResult()

    @property
    def active(self) -> bool:
        return self.policy.max_age_days is not None or self.policy.max_bytes is not None

    def run(self) -> PassResult:
        now = self.clock()
        days = list(self.scan_days(now))
        over = (self.policy.max_bytes is not None
                and sum(d.bytes for d in days) > self.policy.max_bytes)
        # keep_variety needs each frame's cell: from the index (read only when size forces
        # deletion), when it knows the frames; else oldest days first.
        indexed = (self.cells.frames() if self.cells is not None and self.policy.keep_variety
                   and over else [])
        variety = bool(indexed)
        # With keep_variety, whole days go only for their age; size is handled by cell.
        by_days = self.policy.model_copy(update={"max_bytes": None}) if variety else self.policy
        doomed, excess = plan_days(days, now, by_days)
        result = PassResult()
        for day in doomed:
            if self.cancel.is_set():
                break
            result = _add(result, self.delete_day(day))
        if doomed and self.cells is not None:
            self.cells.forget_under(self._prefixes(doomed))
        if variety and self.policy.max_bytes is not None:
            total = sum(d.bytes for d in days if d not in doomed)
            result = _add(result, self._trim_by_cell(indexed, doomed,
                                                     total - self.policy.max_bytes))
            excess = 0  # the cells' floors are kept even over max_bytes: never oldest-first
        gone = {d.path for d in doomed}
        newest = _newest_per_camera(d for d in days if d.path not in gone)
        cutoff = _age_cutoff(now, self.policy.max_age_days)
        # Listing frames costs a stat each: only the newest days that can hold doomed frames.
        trim = [d for d in newest if excess > 0 or (
            cutoff is not None and datetime(d.day.year, d.day.month, d.day.day, tzinfo=UTC)
            < cutoff)]
        frames = [f for d in trim for f in _frames_in(d)]
        trimmed = []
        for frame in plan_frames(frames, now, self.policy, excess):
            if self.cancel.is_set():
                break
            result = _add(result, PassResult(0, 1, _delete_frame(frame.jpg)))
            trimmed.append(frame.jpg.relative_to(self.data_dir).as_posix())
        if trimmed and self.cells is not None:
            self.cells.forget(trimmed)
        self.total = _add(self.total, result)
        return result

    def _prefixes(self, days: Sequence[Day]) -> tuple[str, ...]:
        return tuple(f"{d.path.relative_to(self.data_dir).as_posix()}/" for d in days)

    def _trim_by_cell(self, indexed: Sequence[CellFrame], doomed_days: Sequence[Day],
                      excess: int) -> PassResult:
        """Free `excess` bytes from the fullest cells (variety.py), and drop the index rows
        of the frames deleted."""
        assert self.cells is not None
        if excess <= 0:
            return PassResult()
        prefixes = self._prefixes(doomed_days)
        left = [f for f in indexed if not (prefixes and f.key.startswith(prefixes))]
        gone: list[str] = []
        plan = plan_variety(left, excess, self.floor)
        deleted: Counter[CellKey] = Counter()
        frames = freed = 0
        folders: set[Path] = set()
        for f in plan.doomed:
            if self.cancel.is_set() or freed >= excess:
                break
            jpg = self.data_dir / f.key
            freed += _delete_frame(jpg)
            frames += 1
            deleted[f.cell] += 1
            gone.append(f.key)
            folders.add(jpg.parent)
        self.cells.forget(gone)
        for folder in folders:
            self._sizes.pop(folder, None)
            _remove_empty(folder, stop=self.data_dir / folder.relative_to(self.data_dir).parts[0])
        short = max(0, excess - freed) if not self.cancel.is_set() and freed < excess else 0
        return PassResult(0, frames, freed, tuple(sorted(deleted.items())), short)

    def scan_days(self, now: datetime) -> Iterator[Day]:
        """Every camera day folder under data_dir, with sizes when `max_bytes` needs them."""
        closed_before = (now - timedelta(days=1)).date()
        for camera in tree.subdirs(self.data_dir):
            if not CAMERA_ID_RE.fullmatch(camera.name):
                continue  # `.lyoncam` and anything that is not a camera
            for year in tree.subdirs(camera, numeric=True):
                for month in tree.subdirs(year, numeric=True):
                    for folder in tree.subdirs(month, numeric=True):
                        try:
                            day = date(int(year.name), int(month.name), int(folder.name))
                        except ValueError:
                            continue
                        size = self._size(folder, cache=day < closed_before)
                        yield Day(camera.name, day, folder, size)

    def _size(self, folder: Path, cache: bool) -> int:
        if self.policy.max_bytes is None:
            return 0
        if cache and folder in self._sizes:
            return self._sizes[folder]
        size = sum(_file_size(p) for p in tree.files(folder))
        if cache:
            self._sizes[folder] = size
        return size

    def delete_day(self, day: Day) -> PassResult:
        """Every frame of the day (sidecar first), leftover temp files, then empty folders."""
        frames = freed = 0
        names = tree.files(day.path)
        for jpg in sorted(p for p in names if _frame_file(p, day.camera, ".jpg")):
            if self.cancel.is_set():
                return PassResult(0, frames, freed)
            freed += _delete_frame(jpg)
            frames += 1
        for orphan in names:
            if _frame_file(orphan, day.camera, ".json") or (
                    orphan.name.startswith(".") and TMP_MARK in orphan.name):
                freed += _unlink(orphan)
        self._sizes.pop(day.path, None)
        removed = _remove_empty(day.path, stop=self.data_dir / day.camera)
        return PassResult(1 if removed else 0, frames, freed)


def _add(a: PassResult, b: PassResult) -> PassResult:
    cells = Counter(dict(a.cells))
    cells.update(dict(b.cells))
    return PassResult(a.days + b.days, a.frames + b.frames, a.freed_bytes + b.freed_bytes,
                      tuple(sorted(cells.items())), a.short_bytes + b.short_bytes)


def _newest_per_camera(days: Iterator[Day]) -> list[Day]:
    newest: dict[str, Day] = {}
    for d in days:
        if d.camera not in newest or d.day > newest[d.camera].day:
            newest[d.camera] = d
    return list(newest.values())


def _frame_file(path: Path, camera: str, suffix: str) -> bool:
    """A frame's JPEG or sidecar (by name) of this camera."""
    if path.suffix != suffix or path.name.startswith("."):
        return False
    parsed = parse_frame_stem(path.stem)
    return parsed is not None and parsed[0] == camera


def _frames_in(day: Day) -> list[FrameFile]:
    found = []
    for jpg in tree.files(day.path):
        parsed = parse_frame_stem(jpg.stem) if _frame_file(jpg, day.camera, ".jpg") else None
        if parsed is not None:
            size = _file_size(jpg) + _file_size(jpg.with_suffix(".json"))
            found.append(FrameFile(day.camera, parsed[1], jpg, size))
    return found


def _delete_frame(jpg: Path) -> int:
    """Sidecar first: interrupted here, the JPEG alone is a frame nobody trusts."""
    return _unlink(jpg.with_suffix(".json")) + _unlink(jpg)


def _unlink(path: Path) -> int:
    size = _file_size(path)
    try:
        path.unlink()
    except FileNotFoundError:
        return 0
    except OSError:
        return 0  # read-only or vanished: the next pass tries again
    return size


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _remove_empty(folder: Path, stop: Path) -> bool:
    """Remove `folder` and its emptied parents up to (not including) `stop`."""
    removed = False
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            break  # not empty (a new frame, someone's file): leave it
        removed = True
        folder = folder.parent
    return removed


# -- the free-space guard -------------------------------------------------------------------


#: Bytes counted for a sidecar and the file system's rounding when a frame is written.
_SIDECAR_ALLOWANCE = 8192


class StoragePaused(StoreError):
    """Free space is below `retention.min_free_bytes`: the frame was not stored."""


def free_bytes_of(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class FreeSpaceGuard:
    """A Storage that pauses storing below `min_free_bytes` of free space (see module doc)."""

    def __init__(self, inner: Storage, path: Path, min_free_bytes: int, *,
                 free: Callable[[Path], int] = free_bytes_of,
                 clock: Callable[[], float] = time.monotonic, every_s: float = 1.0) -> None:
        self.inner = inner
        self.path = path
        self.min_free_bytes = min_free_bytes
        self._free = free
        self._clock = clock
        self._every_s = every_s
        self._read_at: float | None = None
        self._cached: int | None = None
        self.paused = False
        #: Frames refused while paused, since start.
        self.paused_frames = 0
        self.log = structlog.get_logger("lyoncam.retention")

    def free_bytes(self) -> int | None:
        """Free bytes on the data disk (cached for `every_s`), None if it cannot be read."""
        now = self._clock()
        if self._read_at is None or now - self._read_at >= self._every_s:
            self._read_at = now
            try:
                self._cached = self._free(self.path)
            except OSError:
                self._cached = None
        return self._cached

    async def save(self, frame: Frame) -> StoredFrame:
        free = self.free_bytes()
        if free is not None and free - len(frame.data) < self.min_free_bytes:
            self.paused_frames += 1
            if not self.paused:
                self.paused = True
                self.log.warning("storing paused: disk almost full", path=str(self.path),
                                 free_bytes=free, min_free_bytes=self.min_free_bytes,
                                 hint="free space or lower retention.max_bytes/max_age_days; "
                                      "storing resumes by itself")
            # The text never changes while paused, so each camera logs it once.
            raise StoragePaused(f"storing paused: free space on {self.path} is below "
                                f"retention.min_free_bytes ({self.min_free_bytes} bytes)")
        if self.paused:
            self.paused = False
            self.log.info("storing resumed", path=str(self.path), free_bytes=free)
        if self._cached is not None:
            # Count this frame as written before the next read of the disk: without it,
            # frames stored within one `every_s` would all see the same free space and
            # together eat into the reserve.
            self._cached -= len(frame.data) + _SIDECAR_ALLOWANCE
        try:
            return await self.inner.save(frame)
        except StoreError:
            self._read_at = None  # ENOSPC, say: read free space afresh for the next frame
            raise

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def latest(self, camera_id: str) -> StoredFrame | None:
        return await self.inner.latest(camera_id)

    async def recover(self, camera_id: str) -> int:
        return await self.inner.recover(camera_id)

    async def read(self, key: str) -> bytes:
        return await self.inner.read(key)

