"""The frame store: a per-camera dated tree of JPEGs, each with a JSON sidecar.

    <data_dir>/<camera_id>/<YYYY>/<MM>/<DD>/<camera_id>_<YYYYMMDDTHHMMSSZ>.jpg (+ .json)

Bytes are stored exactly as served (never re-encoded). Each file is written to a hidden
temp file in its final folder, fsynced and renamed, so a reader or a crash never leaves a
partial frame under a real name. The store is synchronous on purpose: the daemon calls
`save` once per frame through `asyncio.to_thread`, one thread hop for the whole
write-fsync-rename sequence.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lyoncam_daemon.atomic import TMP_MARK, fsync_dir, write_temp

_DIGITS = re.compile(r"^\d+$")


class StoreError(Exception):
    """A frame could not be written; nothing partial was left behind."""


def utc_stamp(moment: datetime) -> str:
    """`20261126T001500Z`: sorts by time, safe in any file system."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a `Z`, to the millisecond."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def day_dir(data_dir: Path, camera_id: str, moment: datetime) -> Path:
    m = moment.astimezone(UTC)
    return data_dir / camera_id / f"{m:%Y}" / f"{m:%m}" / f"{m:%d}"


def frame_path(data_dir: Path, camera_id: str, moment: datetime, n: int = 0) -> Path:
    """Where a frame captured at `moment` goes; `n` > 0 adds the `_n` collision suffix."""
    suffix = f"_{n}" if n else ""
    return day_dir(data_dir, camera_id, moment) / f"{camera_id}_{utc_stamp(moment)}{suffix}.jpg"


class FrameStore:
    """Writes frames and finds each camera's newest one again after a restart."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def save(self, camera_id: str, moment: datetime, data: bytes,
             sidecar: Mapping[str, Any]) -> Path:
        """Store `data` and its sidecar atomically; return the JPEG's path.

        Both files are written and fsynced under temp names first, then renamed JPEG
        first: the only crash window is between two renames, and the orphan JPEG it can
        leave is removed at the next start (`remove_incomplete`), since recovery only
        trusts a frame whose sidecar exists. Raises StoreError (with the path and the OS
        reason) on any OS failure, after removing whatever it had written: the previous
        frames are never touched.
        """
        folder = day_dir(self.data_dir, camera_id, moment)
        temps: list[Path] = []
        try:
            folder.mkdir(parents=True, exist_ok=True)
            final = self._free_name(camera_id, moment)
            meta = json.dumps(
                {**sidecar, "file": final.name}, indent=1, sort_keys=True, ensure_ascii=False
            ).encode()
            temps.append(write_temp(final, data))
            temps.append(write_temp(final.with_suffix(".json"), meta))
            os.replace(temps[0], final)
            try:
                os.replace(temps[1], final.with_suffix(".json"))
            except OSError:
                final.unlink(missing_ok=True)
                raise
            fsync_dir(folder)
            return final
        except OSError as exc:
            for tmp in temps:
                tmp.unlink(missing_ok=True)
            reason = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
            raise StoreError(f"cannot write frame of {camera_id} under {folder}: {reason}") \
                from None

    def _free_name(self, camera_id: str, moment: datetime) -> Path:
        n = 0
        while True:
            candidate = frame_path(self.data_dir, camera_id, moment, n)
            if not candidate.exists() and not candidate.with_suffix(".json").exists():
                return candidate
            n += 1

    def latest(self, camera_id: str) -> tuple[Path, dict[str, Any]] | None:
        """The newest stored frame of a camera and its sidecar, or None.

        Walks only the newest year/month/day folders (names sort by date), so start-up
        costs a few directory listings per camera, not a scan of months of frames.
        A sidecar that cannot be read is skipped in favour of the one before it.
        """
        for day in self._days_newest_first(camera_id):
            for sidecar in sorted(day.glob(f"{camera_id}_*.json"), reverse=True):
                if sidecar.name.startswith("."):
                    continue
                try:
                    meta = json.loads(sidecar.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                jpg = sidecar.with_suffix(".jpg")
                if isinstance(meta, dict) and jpg.exists():
                    return jpg, meta
        return None

    def remove_incomplete(self, camera_id: str) -> int:
        """Delete what a killed process can leave: temp files, and a JPEG without sidecar.

        Only the two newest day folders are looked at (a crash hits the folder being
        written, which is the newest, or yesterday's just after midnight UTC). The orphan
        JPEG's scene is fetched again by the next poll, this time with its sidecar.
        """
        removed = 0
        for day in itertools.islice(self._days_newest_first(camera_id), 2):
            doomed = list(day.glob(f".*{TMP_MARK}*"))
            doomed += [jpg for jpg in day.glob(f"{camera_id}_*.jpg")
                       if not jpg.with_suffix(".json").exists()]
            for path in doomed:
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
        return removed

    def _days_newest_first(self, camera_id: str) -> Iterator[Path]:
        root = self.data_dir / camera_id
        for year in _numeric_dirs(root):
            for month in _numeric_dirs(year):
                yield from _numeric_dirs(month)


def _numeric_dirs(folder: Path) -> list[Path]:
    try:
        entries = [p for p in folder.iterdir() if _DIGITS.match(p.name) and p.is_dir()]
    except OSError:
        return []
    return sorted(entries, key=lambda p: int(p.name), reverse=True)
