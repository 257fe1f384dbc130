"""The daemon's own files, apart from the frames: `<data_dir>/.lyoncam/`.

    lock           one daemon per data_dir (flock); holds the running daemon's pid
    health.json    heartbeat, totals and per-camera counters, rewritten atomically

`.lyoncam` is a name no camera id can take (ids have no dots), so no store or tool ever
mistakes it for a camera's folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from lyoncam_daemon.storage.atomic import TMP_MARK, write_atomic

STATE_DIR = ".lyoncam"


class StateError(Exception):
    """The state folder cannot be used; the message is one line naming it."""


class StateDir:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / STATE_DIR
        self._lock: IO[str] | None = None

    @property
    def health_path(self) -> Path:
        return self.path / "health.json"

    def acquire(self) -> None:
        """Create the folder, take the lock (or say who holds it), record our pid."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            # "a", not "w": a refused second daemon must not wipe the running one's pid.
            lock = (self.path / "lock").open("a")
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StateError(f"data_dir {self.data_dir}: {reason}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            holder = _read_pid(self.path / "lock")
            raise StateError(
                f"data_dir {self.data_dir}: another lyoncam daemon"
                f"{f' (pid {holder})' if holder else ''} is using it"
            ) from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock

    def release(self) -> None:
        """Empty the lock file before unlocking: a stopped daemon's pid would mislead."""
        if self._lock is None:
            return
        with contextlib.suppress(OSError):
            self._lock.truncate(0)
        self._lock.close()
        self._lock = None

    def remove_leftovers(self) -> int:
        """Temp files of a killed process (a half-written health record); call once locked."""
        removed = 0
        for tmp in self.path.glob(f".*{TMP_MARK}*"):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed += 1
        return removed

    def write_health(self, record: Mapping[str, Any], cameras: Sequence[str] | None = None
                     ) -> None:
        """Replace health.json atomically; not fsynced (it is rewritten every summary).
        `cameras`: its cameras' entries, already encoded (`encode_camera`).

        Raises OSError: the caller decides how loudly to say so.
        """
        write_atomic(self.health_path, encode_record(record, cameras), durable=False)


def _read_pid(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def encode_record(record: Mapping[str, Any], cameras: Sequence[str] | None = None) -> bytes:
    """`json.dumps(record)`, byte for byte; given `cameras` (entries made by
    `encode_camera`), `record` with those as its last key, "cameras".

    The json module's C encoder keeps the GIL for the whole of one call, and this runs in a
    thread beside the event loop: in one call, the 5 MB record of 10,000 cameras held the
    loop 0.1-0.2 s (measured by a callback probe in bench/capacity.py's run). The entries
    come already encoded, one camera at a time, and the rest is small. No indent: that
    would leave the C encoder for the Python one.
    """
    parts = [f"{_encode(key)}: {_encode(value)}" for key, value in record.items()]
    if cameras is not None:
        parts.append(f'"cameras": {{{", ".join(cameras)}}}')
    return ("{" + ", ".join(parts) + "}").encode()


def encode_camera(camera_id: str, entry: Mapping[str, Any]) -> str:
    """One entry of health.json's "cameras", as `encode_record` writes it."""
    return f"{_encode(camera_id)}: {_encode(entry)}"


_encode = json.JSONEncoder().encode
