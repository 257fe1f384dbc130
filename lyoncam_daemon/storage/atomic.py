"""Atomic file writes: a reader or a crash sees the old file or the whole new one, never part.

One rule for the frame store, the health record and the Label Studio pull: write a hidden
temp file in the target's own folder (a rename is atomic only within one file system),
fsync it, rename it over the target, then fsync the folder so the rename survives a
power cut.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

#: Marks temp files, so leftovers from a killed process can be recognised and removed.
TMP_MARK = ".tmp-"


def temp_name(path: str | Path) -> str:
    head, name = os.path.split(path)
    return os.path.join(head, f".{name}{TMP_MARK}{secrets.token_hex(4)}")


def write_temp(path: str | Path, data: bytes, *, durable: bool = True) -> str:
    """Write `data` to a new hidden temp file beside `path`; rename it with `os.replace`.

    On any error the temp file is removed and the error re-raised.
    """
    tmp = temp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace `path` with `data` atomically; on any error nothing new is left behind.

    `durable=False` skips both fsyncs, for files that are rewritten often and worthless
    after a crash (the health record).
    """
    tmp = write_temp(path, data, durable=durable)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def fsync_dir(folder: str | Path) -> None:
    """Make renames in `folder` durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durable(folder: str | Path) -> None:
    """`os.makedirs(folder, exist_ok=True)`, each folder it creates made durable: a new
    folder is an entry in its parent, lost in a power cut until the parent is fsynced (a new
    month's folder, say, and every frame under it with it)."""
    missing: list[str] = []
    path = os.fspath(folder)
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for path in reversed(missing):
        try:
            os.mkdir(path)
        except FileExistsError:
            if not os.path.isdir(path):
                raise
            continue  # made meanwhile by another writer, who makes it durable
        fsync_dir(os.path.dirname(path) or ".")
