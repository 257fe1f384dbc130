"""The blocking file work of a pull: decode checks, hashes, atomic writes, moves, removals.

The functions here read, hash, decode or fsync, so sync and run call them only through
``asyncio.to_thread``, never on the event loop: a 2-core machine hashing a large dataset must not
stall the requests in flight (tests/labelstudio/test_sync.py fails if one runs on the loop).
Each call does all the work for one image, so an image costs one thread hop.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from PIL import Image, UnidentifiedImageError

from lyoncam_daemon.labelstudio.pull.manifest import MANIFEST, Entry, source_ref
from lyoncam_daemon.labelstudio.pull.model import Item, PullError
from lyoncam_daemon.storage.atomic import write_atomic

LabelChange = Literal["new", "changed", "same"]


@dataclass(frozen=True)
class OnDisk:
    """One image the dataset now holds, and what it took to get there."""

    sha256: str
    size: int
    moved: bool
    """Moved from the other side of the split (the split of its group changed)."""
    label: LabelChange | None
    """What became of its label file; None for an unlabelled image."""


def inside(out: Path, rel: str) -> Path:
    """``out / rel``, refusing a path (from a tampered manifest) that leaves ``out``."""
    path = (out / rel).resolve()
    if not path.is_relative_to(out.resolve()):
        raise PullError(f"refusing a path outside the output directory: {rel!r}")
    return path


def check_image(data: bytes) -> str:
    """The image format if the bytes decode completely; raises ValueError otherwise."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.width <= 0 or im.height <= 0:
                raise ValueError("empty image")
            return str(im.format)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"does not decode as an image ({exc})") from None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_file(path: Path, data: bytes) -> None:
    """Create the folder if needed, then write atomically (the one rule of atomic.py)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)


def keep_present(out: Path, item: Item, prev: Entry | None) -> OnDisk | None:
    """The image if the disk already has it intact (moved to its side if needed), else None.

    With a manifest entry for the same source, the file it lists must still have its SHA-256;
    without one (manifest lost), a file at the target path is kept if it decodes.
    """
    target = inside(out, item.image_rel)
    found: tuple[str, int] | None = None
    moved = False
    if prev is not None and prev.get("source") == source_ref(item.source):
        old = inside(out, str(prev.get("image", "")))
        if old.is_file():
            data = old.read_bytes()
            if sha256(data) == prev.get("sha256"):
                if old != target:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(old, target)
                    moved = True
                found = (str(prev["sha256"]), len(data))
    elif prev is None and target.is_file():
        data = target.read_bytes()
        try:
            check_image(data)
            found = (sha256(data), len(data))
        except ValueError:
            found = None
    if found is None:
        return None
    return OnDisk(*found, moved, write_label(out, item, prev))


def store_fetched(out: Path, item: Item, prev: Entry | None, data: bytes) -> OnDisk:
    """Decode-check a downloaded image, write it and its label; ValueError if it is no image."""
    check_image(data)
    write_file(inside(out, item.image_rel), data)
    return OnDisk(sha256(data), len(data), False, write_label(out, item, prev))


def write_label(out: Path, item: Item, prev: Entry | None) -> LabelChange | None:
    """Write the item's label file; say whether it is new, changed or as before."""
    if item.label_rel is None or item.label is None:
        return None
    path = inside(out, item.label_rel)
    data = item.label.encode()
    change: LabelChange
    if path.is_file():
        if path.read_bytes() == data:
            return "same"
        change = "changed"
    elif prev is not None and prev.get("label"):  # moved sides: compare with the old copy
        old = inside(out, str(prev["label"]))
        change = "same" if old.is_file() and old.read_bytes() == data else "changed"
    else:
        change = "new"
    write_file(path, data)
    return change


def tidy(
    out: Path, previous: Mapping[str, Entry], entries: Mapping[str, Entry]
) -> list[tuple[str, Entry]]:
    """Remove what the previous run wrote and this one no longer has; return (stem, entry) of
    each image removed.

    Whole images of tasks the plan dropped (task deleted, --include-unlabelled dropped, a failed
    re-download), and old copies left on the other side by a split change. Only files the
    previous manifest lists are touched.
    """
    removed: list[tuple[str, Entry]] = []
    for stem, prev in previous.items():
        entry = entries.get(stem)
        for key in ("image", "label"):
            rel = prev.get(key)
            if isinstance(rel, str) and rel and (entry is None or entry.get(key) != rel):
                path = inside(out, rel)
                if path.is_file():
                    path.unlink()
        if entry is None:
            removed.append((stem, prev))
    return removed


def data_yaml(out: Path, classes: Sequence[str]) -> str:
    doc = {
        "path": str(out.resolve()),
        "train": "images/train",
        "val": "images/val",
        "names": dict(enumerate(classes)),
    }
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def write_dataset_files(out: Path, classes: Sequence[str], manifest: Mapping[str, Any]) -> None:
    """data.yaml, classes.txt and the manifest (last: it vouches for the files above)."""
    for folder in ("images/train", "images/val", "labels/train", "labels/val"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    write_file(out / "classes.txt", "".join(f"{c}\n" for c in classes).encode())
    write_file(out / "data.yaml", data_yaml(out, classes).encode())
    write_file(out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=False).encode())
