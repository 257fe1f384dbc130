"""The filesystem store: a per-camera dated tree of JPEGs, each with a JSON sidecar.

Bytes are stored exactly as served (never re-encoded). Each file is written to a hidden
temp file in its final folder, fsynced and renamed (atomic.py), so a reader or a crash
never sees a partial frame under a real name. The blocking work of one frame (two writes,
two fsyncs, two renames, a folder fsync) is done in one thread hop: aiofiles would take a
hop for each of those calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from lyoncam_daemon.storage import DeleteHook, Frame, StoredFrame, StoreError, encode_sidecar, tree
from lyoncam_daemon.storage.atomic import TMP_MARK, fsync_dir, makedirs_durable, write_temp
from lyoncam_daemon.storage.layout import day_prefix, frame_key, frame_stem, parse_frame_stem


class FilesystemStorage:
    """Frames under `data_dir`; see the module docstring. Implements `storage.Storage`."""

    def __init__(self, data_dir: Path, forget: DeleteHook | None = None) -> None:
        self.data_dir = data_dir
        #: Told the keys of frames the repair deletes (the index drops their rows).
        self.forget = forget

    # -- the Storage protocol ---------------------------------------------------------------

    async def open(self) -> None:
        """Nothing runs in the background: every write is done when `save` returns."""

    async def close(self) -> None:
        """Nothing to release."""

    async def save(self, frame: Frame) -> StoredFrame:
        return await asyncio.to_thread(self.write, frame)

    async def latest(self, camera_id: str) -> StoredFrame | None:
        return await asyncio.to_thread(self.find_latest, camera_id)

    async def recover(self, camera_id: str) -> int:
        return await asyncio.to_thread(self.remove_incomplete, camera_id)

    async def read(self, key: str) -> bytes:
        return await asyncio.to_thread(self.read_frame, key)

    # -- blocking implementations (also for tools and tests) --------------------------------

    def path_of(self, key: str) -> Path:
        return self.data_dir / key

    def read_frame(self, key: str) -> bytes:
        try:
            return self.path_of(key).read_bytes()
        except OSError as exc:
            raise StoreError(f"cannot read {self.path_of(key)}: {exc.strerror or exc}") from None

    def write(self, frame: Frame) -> StoredFrame:
        """Store the frame and its sidecar atomically.

        Both files are written and fsynced under temp names first, then renamed JPEG
        first: the only crash window is between two renames, and the orphan JPEG it can
        leave is removed at the next start (`remove_incomplete`), since recovery only
        trusts a frame whose sidecar exists. Raises StoreError (with the folder and the OS
        reason) on any OS failure, after removing whatever it had written.
        """
        # Plain strings and os calls, not pathlib: this runs for every frame, in a thread
        # that holds the GIL for all of it but the writes and fsyncs.
        folder = os.path.join(self.data_dir, day_prefix(frame.camera_id, frame.captured_at))
        temps: list[str] = []
        try:
            if not os.path.isdir(folder):
                makedirs_durable(folder)
            n = self._free_n(folder, frame.camera_id, frame.captured_at)
            stem = frame_stem(frame.camera_id, frame.captured_at, n)
            final = os.path.join(folder, stem)
            sidecar = {**frame.sidecar, "file": stem + ".jpg"}
            temps.append(write_temp(final + ".jpg", frame.data))
            temps.append(write_temp(final + ".json", encode_sidecar(sidecar)))
            os.replace(temps[0], final + ".jpg")
            try:
                os.replace(temps[1], final + ".json")
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(final + ".jpg")
                raise
            fsync_dir(folder)
        except OSError as exc:
            for tmp in temps:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            reason = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
            raise StoreError(
                f"cannot write frame of {frame.camera_id} under {folder}: {reason}") from None
        key = frame_key(frame.camera_id, frame.captured_at, n)
        return StoredFrame(frame.camera_id, key, frame.captured_at, len(frame.data), sidecar)

    @staticmethod
    def _free_n(folder: str, camera_id: str, moment: datetime) -> int:
        """The first collision suffix (layout.frame_stem) free for both files."""
        for n in itertools.count():
            path = os.path.join(folder, frame_stem(camera_id, moment, n))
            if not os.path.exists(path + ".jpg") and not os.path.exists(path + ".json"):
                return n
        raise AssertionError("unreachable")  # pragma: no cover

    def find_latest(self, camera_id: str) -> StoredFrame | None:
        """The newest stored frame of a camera whose sidecar reads, or None.

        Walks only the newest year/month/day folders (names sort by date), so start-up
        costs a few directory listings per camera, not a scan of months of frames.
        """
        for day in self._days_newest_first(camera_id):
            for sidecar in sorted(tree.files(day), reverse=True):
                parsed = parse_frame_stem(sidecar.stem)
                if (sidecar.name.startswith(".") or sidecar.suffix != ".json" or parsed is None
                        or parsed[0] != camera_id):
                    continue
                try:
                    meta = json.loads(sidecar.read_text(encoding="utf-8"))
                    jpg = sidecar.with_suffix(".jpg")
                    size = jpg.stat().st_size
                except (OSError, ValueError):
                    continue
                if isinstance(meta, dict):
                    key = jpg.relative_to(self.data_dir).as_posix()
                    return StoredFrame(camera_id, key, parsed[1], size, meta)
        return None

    def remove_incomplete(self, camera_id: str) -> int:
        """Delete what a killed process can leave: temp files, and a JPEG without sidecar.

        Only the two newest day folders are looked at (a crash hits the folder being
        written, which is the newest, or yesterday's just after midnight UTC). The orphan
        JPEG's scene is fetched again by the next poll, this time with its sidecar.
        """
        removed = 0
        forgotten: list[str] = []
        for day in itertools.islice(self._days_newest_first(camera_id), 2):
            names = tree.files(day)
            present = {p.name for p in names}
            for path in names:
                temp = path.name.startswith(".") and TMP_MARK in path.name
                orphan = (path.suffix == ".jpg" and not path.name.startswith(".")
                          and path.name.startswith(f"{camera_id}_")
                          and f"{path.stem}.json" not in present)
                if not (temp or orphan):
                    continue
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
                    if orphan:
                        forgotten.append(path.relative_to(self.data_dir).as_posix())
        if forgotten and self.forget is not None:
            self.forget(forgotten)
        return removed

    def _days_newest_first(self, camera_id: str) -> Iterator[Path]:
        """Day folders of a camera, newest first; a linked camera or day folder is skipped
        (storage/tree.py): the repair never deletes anything outside data_dir."""
        if tree.real_folder(self.data_dir, camera_id) is None:
            return
        for year in _numeric_dirs(self.data_dir / camera_id):
            for month in _numeric_dirs(year):
                yield from _numeric_dirs(month)


def _numeric_dirs(folder: Path) -> list[Path]:
    return sorted(tree.subdirs(folder, numeric=True), key=lambda p: int(p.name), reverse=True)
