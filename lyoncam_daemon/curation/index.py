"""The frame catalogue: one SQLite row per stored frame, for `report`, `sample` and `push`.

The sidecars stay the source of truth; the index is a copy that answers "how many night
frames of CWL9018 in the rain" without reading a million JSON files. The daemon keeps it
current with a post-store hook (`IndexHook`); `index` adds what was stored without it and
drops what was deleted, `index --rebuild` re-reads every sidecar.

SQLite in WAL mode: readers (a `report` while the daemon runs) never block the writer. The
hook writes from one thread of its own with its own connection, never on the event loop.
Every write is an upsert keyed by the frame's key, so the hook and a rebuild can run at
the same time: a rebuild only drops rows it neither saw nor was told of while it ran.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from lyoncam_daemon.curation import predictions
from lyoncam_daemon.curation.dataset import UNKNOWN
from lyoncam_daemon.storage import StoredFrame, parse_frame_stem, tree
from lyoncam_daemon.storage.state import STATE_DIR
from lyoncam_daemon.storage.variety import CellFrame

INDEX_FILE = "index.sqlite"
#: Rows per transaction when (re)building: big enough to be fast, small enough that the
#: daemon's hook never waits long for the write lock.
BATCH = 5000

SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    key TEXT PRIMARY KEY,
    camera TEXT NOT NULL,
    captured_at TEXT NOT NULL,
    day TEXT NOT NULL,
    daypart TEXT,
    weather TEXT,
    sun_elevation REAL,
    brightness REAL,
    contrast REAL,
    sha256 TEXT,
    width INTEGER,
    height INTEGER,
    bytes INTEGER,
    indexed_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS frames_cell ON frames (camera, daypart, weather, captured_at);
CREATE INDEX IF NOT EXISTS frames_day ON frames (day);
CREATE TABLE IF NOT EXISTS pushed (
    key TEXT NOT NULL,
    server TEXT NOT NULL,
    project INTEGER NOT NULL,
    task_id INTEGER,
    pushed_at REAL NOT NULL,
    PRIMARY KEY (key, server, project)
) WITHOUT ROWID;
"""

COLUMNS = ("key", "camera", "captured_at", "day", "daypart", "weather", "sun_elevation",
           "brightness", "contrast", "sha256", "width", "height", "bytes",
           "indexed_at")
_UPSERT = (f"INSERT OR REPLACE INTO frames ({', '.join(COLUMNS)}) "
           f"VALUES ({', '.join('?' * len(COLUMNS))})")

Row = tuple[Any, ...]


class IndexFileError(Exception):
    """The index cannot be opened or written; the message is one line naming the file."""


def index_path(data_dir: Path) -> Path:
    return data_dir / STATE_DIR / INDEX_FILE


def row_of(key: str, sidecar: Mapping[str, Any], now: float) -> Row:
    """The index row of a frame; ValueError (naming the field) for a sidecar that is not one."""
    camera, captured = sidecar.get("camera_id"), sidecar.get("captured_at")
    if not isinstance(camera, str) or not camera:
        raise ValueError("no camera_id")
    if not isinstance(captured, str):
        raise ValueError("no captured_at")
    try:
        day = datetime.fromisoformat(captured).date().isoformat()
    except ValueError:
        raise ValueError(f"captured_at {captured!r} is not ISO 8601") from None
    weather = sidecar.get("weather")
    return (key, camera, captured, day, _text(sidecar.get("daypart")),
            _text(weather.get("label")) if isinstance(weather, Mapping) else None,
            _number(sidecar.get("sun_elevation")), _number(sidecar.get("brightness")),
            _number(sidecar.get("contrast")), _text(sidecar.get("sha256")),
            _integer(sidecar.get("width")), _integer(sidecar.get("height")),
            _integer(sidecar.get("bytes")), now)


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _integer(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def connect(path: Path, *, create: bool = True) -> sqlite3.Connection:
    """Open (and create) the index; IndexFileError naming the file if that fails."""
    if not create and not path.exists():
        raise IndexFileError(f"{path}: no index yet (run `index`)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL survives a process crash; a power cut may lose the last rows, which
        # `index` puts back from the sidecars.
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        # Tables added later are created the same way: an older index file opens as it is.
        db.executescript(predictions.SCHEMA)
    except (OSError, sqlite3.Error) as exc:
        raise IndexFileError(f"{path}: {exc}") from None
    return db


def upsert(db: sqlite3.Connection, rows: Iterable[Row]) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany(_UPSERT, rows)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def delete_rows(db: sqlite3.Connection, keys: Iterable[str]) -> None:
    """Drop the frames' rows (the `pushed` ledger keeps its record of what was sent)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany("DELETE FROM frames WHERE key = ?", ((k,) for k in keys))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


# --- kept current by the daemon ------------------------------------------------------------


class IndexHook:
    """A post-store hook (storage.StoreHook) adding each stored frame to the index.

    One thread of its own writes, with its own connection (sqlite3 connections belong to
    their thread), so the event loop never waits for SQLite.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = index_path(data_dir)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="lyoncam-index")
        self._db: sqlite3.Connection | None = None

    async def __call__(self, stored: StoredFrame) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._add, stored.key, dict(stored.sidecar))

    def _add(self, key: str, sidecar: dict[str, Any]) -> None:
        if self._db is None:
            self._db = connect(self.path)
        try:
            upsert(self._db, [row_of(key, sidecar, time.time())])
        except sqlite3.Error as exc:
            raise IndexFileError(f"{self.path}: {exc}") from None

    def forget(self, keys: Sequence[str]) -> None:
        """A storage.DeleteHook: drop the rows of deleted frames. Blocking (called from the
        deleting thread), done in the index's own thread, after any pending add."""
        self._pool.submit(self._forget, list(keys)).result()

    def _forget(self, keys: list[str]) -> None:
        if self._db is None:
            self._db = connect(self.path)
        try:
            delete_rows(self._db, keys)
        except sqlite3.Error as exc:
            raise IndexFileError(f"{self.path}: {exc}") from None

    def close(self) -> None:
        """Wait for pending writes, then close the connection in its own thread."""
        self._pool.submit(self._close).result()
        self._pool.shutdown()

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


# --- built from the sidecars ---------------------------------------------------------------


@dataclass
class Refreshed:
    """What `refresh` did: rows written, rows dropped, sidecars it could not use."""

    indexed: int = 0
    removed: int = 0
    total: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def frame_keys(data_dir: Path, links: tree.SkippedLinks | None = None) -> Iterator[str]:
    """Keys of every complete frame (JPEG and sidecar) under data_dir; names only, no reads.

    Dot-folders (`.lyoncam`) and dot-files (temp files) are skipped, as is any name that
    is not a frame's (storage/layout.py), and every symlink (storage/tree.py): a frame
    reached through a link is outside data_dir.
    """
    cameras = sorted((p for p in tree.subdirs(data_dir, links=links)
                      if not p.name.startswith(".")), key=lambda p: p.name)
    for camera in cameras:
        yield from _keys_under(data_dir, camera, links)


def _keys_under(data_dir: Path, folder: Path, links: tree.SkippedLinks | None) -> Iterator[str]:
    names = {p.name for p in tree.files(folder, links=links)}
    rel = os.path.relpath(folder, data_dir).replace(os.sep, "/")
    for name in sorted(names):
        stem, dot, ext = name.rpartition(".")
        if (dot and ext == "jpg" and not name.startswith(".")
                and f"{stem}.json" in names and parse_frame_stem(stem) is not None):
            yield f"{rel}/{name}"
    for sub in sorted(tree.subdirs(folder, links=links), key=lambda p: p.name):
        if not sub.name.startswith("."):
            yield from _keys_under(data_dir, sub, links)


@dataclass
class Agreement:
    """What `index --check` found: rows whose frame is gone, frames without a row."""

    rows: int
    frames: int
    gone: list[str]
    unindexed: list[str]

    @property
    def agrees(self) -> bool:
        return not self.gone and not self.unindexed

    def line(self) -> str:
        if self.agrees:
            return f"index and tree agree: {self.frames} frames"
        return (f"index and tree disagree: {len(self.gone)} indexed frames are gone from the "
                f"tree, {len(self.unindexed)} frames are not indexed "
                f"({self.rows} rows, {self.frames} frames); `index` brings it in line")


def check(data_dir: Path, links: tree.SkippedLinks | None = None) -> Agreement:
    """Compare the index's keys with the tree's frames (names only, nothing written)."""
    db = connect(index_path(data_dir), create=False)
    try:
        rows = {k for (k,) in db.execute("SELECT key FROM frames")}
    except sqlite3.Error as exc:
        raise IndexFileError(f"{index_path(data_dir)}: {exc}") from None
    finally:
        db.close()
    on_disk = set(frame_keys(data_dir, links))
    return Agreement(len(rows), len(on_disk), sorted(rows - on_disk), sorted(on_disk - rows))


def refresh(data_dir: Path, *, rebuild: bool = False,
            progress: Callable[[int], None] | None = None,
            links: tree.SkippedLinks | None = None) -> Refreshed:
    """Bring the index in line with the tree: read the sidecars it lacks (every sidecar when
    `rebuild`), drop rows whose frame is gone."""
    db = connect(index_path(data_dir))
    started = time.time()
    done = Refreshed()
    try:
        known: set[str] = set() if rebuild else {k for (k,) in db.execute("SELECT key FROM frames")}
        seen: set[str] = set()
        batch: list[Row] = []
        for key in frame_keys(data_dir, links):
            seen.add(key)
            if key in known:
                continue
            sidecar = data_dir / (key.removesuffix(".jpg") + ".json")
            try:
                meta = json.loads(sidecar.read_bytes())
                batch.append(row_of(key, meta if isinstance(meta, Mapping) else {}, time.time()))
            except (OSError, ValueError) as exc:
                done.skipped.append((str(sidecar), str(exc)))
                continue
            if len(batch) >= BATCH:
                done.indexed += _flush(db, batch, progress, done.indexed)
        done.indexed += _flush(db, batch, progress, done.indexed)
        # Rows written after we started (the daemon's hook) are current even if not seen.
        gone = [(k,) for (k,) in db.execute(
            "SELECT key FROM frames WHERE indexed_at < ?", (started,)) if k not in seen]
        db.execute("BEGIN IMMEDIATE")
        db.executemany("DELETE FROM frames WHERE key = ?", gone)
        predictions.forget(db, (k for (k,) in gone))
        db.execute("COMMIT")
        done.removed = len(gone)
        done.total = db.execute("SELECT count(*) FROM frames").fetchone()[0]
    except sqlite3.Error as exc:
        raise IndexFileError(f"{index_path(data_dir)}: {exc}") from None
    finally:
        db.close()
    return done


def _flush(db: sqlite3.Connection, batch: list[Row], progress: Callable[[int], None] | None,
           before: int) -> int:
    n = len(batch)
    if n:
        upsert(db, batch)
        batch.clear()
        if progress is not None:
            progress(before + n)
    return n


def open_current(data_dir: Path, say: Callable[[str], None]) -> sqlite3.Connection:
    """The index for reading, built first when there is none yet (saying so)."""
    path = index_path(data_dir)
    if not path.exists():
        say(f"no index yet under {path.parent}: building it from the sidecars")
        done = refresh(data_dir)
        for where, why in done.skipped:
            say(f"skipped {where}: {why}")
    return connect(path)


# --- for retention -------------------------------------------------------------------------

#: Bytes counted for a sidecar beside the JPEG's own (the index keeps the JPEG's size only).
SIDECAR_BYTES = 2048


class IndexCells:
    """The index as retention's cell source (storage/variety.py): every frame's (camera,
    daypart, weather) cell and size for `keep_variety`, and the rows to drop when frames
    are deleted. Used from the retention thread, with a connection per call."""

    def __init__(self, data_dir: Path) -> None:
        self.path = index_path(data_dir)

    def frames(self) -> list[CellFrame]:
        if not self.path.exists():
            return []
        db = connect(self.path)
        try:
            return [CellFrame(key, (camera, daypart or UNKNOWN, weather or UNKNOWN), captured,
                              (size or 0) + SIDECAR_BYTES)
                    for key, camera, daypart, weather, captured, size in db.execute(
                        "SELECT key, camera, daypart, weather, captured_at, bytes FROM frames")]
        except sqlite3.Error as exc:
            raise IndexFileError(f"{self.path}: {exc}") from None
        finally:
            db.close()

    def forget(self, keys: Iterable[str]) -> None:
        gone = list(keys)
        if gone:
            self._delete("key = ?", [(k,) for k in gone])

    def forget_under(self, prefixes: Iterable[str]) -> None:
        # A key range, not LIKE: the primary key answers it without a scan. Keys under
        # `CAM/2026/11/20/` sort at or after it and before `CAM/2026/11/200`.
        ranges = [(p, p[:-1] + chr(ord(p[-1]) + 1)) for p in prefixes if p]
        if ranges:
            self._delete("key >= ? AND key < ?", ranges)

    def _delete(self, where: str, params: Sequence[tuple[str, ...]]) -> None:
        if not self.path.exists():
            return
        db = connect(self.path)
        try:
            db.execute("BEGIN IMMEDIATE")
            for table in ("frames", *predictions.TABLES):
                db.executemany(f"DELETE FROM {table} WHERE {where}", params)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise IndexFileError(f"{self.path}: {exc}") from None
        finally:
            db.close()
