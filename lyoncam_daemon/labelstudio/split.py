"""Deterministic train/val split that keeps near-identical frames on one side.

Frames of one camera a minute apart are near duplicates: putting one in train and its neighbour
in val measures memory, not detection. lyoncam frames are named ``<CAMERA>_<YYYYMMDDTHHMMSSZ>``,
where a camera id may itself hold ``_`` and ``-`` (``[A-Za-z0-9_-]{1,64}``, e.g. ``CAM_A``), so
the group of a frame is its camera plus the time block it falls in (default one hour). The side
of a group is decided by a hash of the group key alone, so it does not depend on which other
frames exist: adding frames later never moves the ones already split. Files not named that way
form a group of one (their own stem).

The stems seen here are the dataset's output names: Label Studio's upload prefix (``1a2b3c4d-``)
is already dropped by ``yolo.output_name``, and a ``_task<id>`` added on a name collision (or any
other ``.``/``_``/``-`` suffix after the time) is ignored.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from lyoncam_daemon.storage.layout import parse_frame_stem

Side = Literal["train", "val"]

SALT = "lyoncam-split-v1"


def group_key(stem: str, block_hours: float = 1.0) -> str:
    parsed = parse_frame_stem(stem)
    if parsed is None:
        return f"file:{stem}"
    camera, when = parsed[0].upper(), parsed[1]
    block = int(when.timestamp() // (block_hours * 3600))
    return f"{camera}@{block_hours:g}h#{block}"


def side_of_group(key: str, val_fraction: float) -> Side:
    digest = hashlib.sha256(f"{SALT}:{key}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    return "val" if position < val_fraction else "train"


def side_of(stem: str, val_fraction: float = 0.2, block_hours: float = 1.0) -> Side:
    return side_of_group(group_key(stem, block_hours), val_fraction)
