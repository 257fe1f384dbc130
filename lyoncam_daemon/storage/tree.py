"""Walking the data tree without ever leaving it: the one rule for every walk.

A symlink inside `data_dir` (a camera folder or a day folder pointing at another disk, or at
someone's photos) is never followed, listed or deleted through: retention, the start-up
repair, the index and the 24 h counts all list folders through here, which returns real
folders and regular files only. Each link skipped is logged once (a warning naming it and
where it points), so a user who linked a folder on purpose learns that lyoncam leaves it
alone instead of wondering why retention does not clean it.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import structlog

#: Links remembered as already logged; past this many, further ones are not logged (a tree
#: of ten thousand links says so ten thousand times at most once per process).
LINKS_REMEMBERED = 1000


class SkippedLinks:
    """Symlinks found by walks, each logged once. Thread-safe: walks run in threads."""

    def __init__(self, say: Callable[[str, str], None] | None = None) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._say = say

    def skip(self, path: str) -> None:
        with self._lock:
            if path in self._seen or len(self._seen) >= LINKS_REMEMBERED:
                return
            self._seen.add(path)
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        if self._say is not None:
            self._say(path, target)
        else:
            structlog.get_logger("lyoncam.storage").warning(
                "symlink in the data tree skipped: never followed, counted or deleted",
                path=path, target=target)

    @property
    def seen(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._seen)


#: The process's own record: one log line per link, whichever walk met it first.
LINKS = SkippedLinks()


def _entries(folder: str | Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return list(it)
    except OSError:
        return []  # gone, unreadable, or not a folder: nothing to walk


def subdirs(folder: str | Path, *, numeric: bool = False,
            links: SkippedLinks | None = None) -> list[Path]:
    """Real subfolders of `folder` (all-digit names only when `numeric`); links skipped."""
    found = []
    for entry in _entries(folder):
        if numeric and not entry.name.isdigit():
            continue
        if entry.is_symlink():
            (links or LINKS).skip(entry.path)
        elif entry.is_dir(follow_symlinks=False):
            found.append(Path(entry.path))
    return found


def files(folder: str | Path, *, links: SkippedLinks | None = None) -> list[Path]:
    """Regular files of `folder`; links skipped (a link's target is never read or deleted)."""
    found = []
    for entry in _entries(folder):
        if entry.is_symlink():
            (links or LINKS).skip(entry.path)
        elif entry.is_file(follow_symlinks=False):
            found.append(Path(entry.path))
    return found


def real_folder(root: Path, relative: str) -> Path | None:
    """`root/relative` if every part below `root` is a real folder (no link), else None."""
    path = root
    for part in relative.split("/"):
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            return None
        if stat.S_ISLNK(mode):
            LINKS.skip(str(path))
            return None
        if not stat.S_ISDIR(mode):
            return None
    return path
