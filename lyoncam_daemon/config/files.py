"""Small files a setting names (S3 credentials, a Label Studio token): read bounded, and only
if they are regular files.

A path set to `/dev/zero` would be read until memory runs out, and a FIFO would hang the
start-up waiting for a writer; a file of secrets is a few hundred bytes. Both are refused
with one line, by `check` as by `run`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: A credentials or token file is a few lines; anything bigger is not one.
SMALL_FILE_LIMIT = 64 * 1024


class SmallFileError(Exception):
    """Why the file cannot be used, in a few words (the caller names the file)."""


def read_small_file(path: Path, limit: int = SMALL_FILE_LIMIT) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; SmallFileError otherwise."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (we refuse it right after).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise SmallFileError(exc.strerror or str(exc)) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SmallFileError("not a regular file")
        if info.st_size > limit:
            raise SmallFileError(f"{info.st_size} bytes, over the {limit}-byte limit")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise SmallFileError(f"over the {limit}-byte limit")
        return b"".join(chunks)
    except OSError as exc:
        raise SmallFileError(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
