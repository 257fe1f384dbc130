"""Keeping frames: where they go, how they are written, and how long they stay.

A store takes a frame and its sidecar and returns where it put them; finds a camera's
newest frame again after a restart (and reads its bytes back, for the judge's reference);
and repairs what a killed process left at start. This
module is that small protocol, so the capture path does not care where frames go.

Lives here: the one frame-name rule (layout.py), the one atomic-write rule (atomic.py), the
one walk of the data tree that never follows a link out of it (tree.py), the
dated filesystem tree (filesystem.py), an S3-compatible bucket (s3.py) and the spool in
front of it during outages (spool.py), the daemon's own folder `.lyoncam` with its lock and
health record (state.py), and retention with the free-space guard (retention.py). What
happens *after* a frame is stored (the index, recent frames) hangs on post-store hooks,
never inside a store.

May import: config.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from lyoncam_daemon.storage.layout import frame_key, iso_utc, parse_frame_stem, utc_stamp

__all__ = [
    "DeleteHook",
    "Frame",
    "Storage",
    "StoreDenied",
    "StoreError",
    "StoreHook",
    "StoredFrame",
    "encode_sidecar",
    "frame_key",
    "iso_utc",
    "parse_frame_stem",
    "utc_stamp",
]


def encode_sidecar(sidecar: Mapping[str, Any]) -> bytes:
    """A sidecar as stored, by every store and tool: UTF-8 JSON on one line, keys sorted.

    One line because an `indent` makes the json module fall back from its C encoder to
    Python, a cost paid for every stored frame; `jq` shows it indented for a reader.
    """
    return json.dumps(sidecar, sort_keys=True, ensure_ascii=False).encode()


class StoreError(Exception):
    """A frame could not be stored; nothing partial was left behind, nothing older touched."""


class StoreDenied(StoreError):
    """The store refuses our credentials (HTTP 401/403): not an outage, waiting will not
    mend it. At start this stops the daemon; later it is its own condition (spool.py)."""


@dataclass(frozen=True)
class Frame:
    """A frame to store: the bytes exactly as served and the sidecar describing them."""

    camera_id: str
    captured_at: datetime
    data: bytes
    sidecar: Mapping[str, Any]


@dataclass(frozen=True)
class StoredFrame:
    """A frame once stored: `key` is its relative key (layout.frame_key, maybe suffixed)."""

    camera_id: str
    key: str
    captured_at: datetime
    size: int
    #: The sidecar as written, `file` included.
    sidecar: Mapping[str, Any]


class Storage(Protocol):
    """What the capture path needs of a store. Every call is safe to await on the loop."""

    async def open(self) -> None:
        """Start what the store runs in the background (an upload queue); once, at start."""

    async def close(self) -> None:
        """Stop it, keeping anything not yet delivered for the next start."""

    async def save(self, frame: Frame) -> StoredFrame:
        """Store atomically; raise StoreError (one line naming the place and the reason)."""

    async def latest(self, camera_id: str) -> StoredFrame | None:
        """The newest complete frame of a camera, so a restart stores no duplicate."""

    async def recover(self, camera_id: str) -> int:
        """Remove what an interrupted write left for this camera; return how many files."""

    async def read(self, key: str) -> bytes:
        """A stored frame's bytes (the judge rebuilds its reference from the newest at
        start); StoreError (one line) when they cannot be read."""


#: Called after each stored frame (index, retention, push bookkeeping...). A failing hook is
#: logged and counted by the caller; it never costs the frame, which is already stored.
StoreHook = Callable[[StoredFrame], Awaitable[None]]

#: Told the keys of frames deleted from the store (by retention or the start-up repair), in
#: the same pass, so the index never offers a frame that is gone. Blocking: it is called
#: from the thread that deleted them, never on the event loop.
DeleteHook = Callable[[Sequence[str]], None]
