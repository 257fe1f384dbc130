"""Seed mode: read the labels folder of a Label Studio YOLO export (``--labels-dir``).

Blocking file reads: run it off the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lyoncam_daemon.labelstudio.pull.model import PullError, Seed


def read_seed(labels_dir: Path, classes: Sequence[str] | None) -> Seed:
    """The export's label files and class names (``classes`` overrides its classes.txt)."""
    labels = read_labels_dir(labels_dir)
    names = list(classes) if classes else find_export_classes(labels_dir)
    if names is None:
        raise PullError(
            f"no classes.txt in or beside {labels_dir}: pass --classes in the order "
            "of the export's class ids"
        )
    return Seed(labels, tuple(names))


def read_labels_dir(labels_dir: Path) -> dict[str, str]:
    """stem → text of every ``*.txt`` in a YOLO export's labels folder (classes.txt excluded)."""
    if not labels_dir.is_dir():
        raise PullError(f"labels directory {labels_dir} does not exist")
    out: dict[str, str] = {}
    for path in sorted(labels_dir.glob("*.txt")):
        if path.name != "classes.txt" and path.is_file():
            out[path.stem] = path.read_text(encoding="utf-8", errors="replace")
    return out


def find_export_classes(labels_dir: Path) -> list[str] | None:
    """The export's classes.txt (in the labels folder or beside it), one name a line."""
    for candidate in (labels_dir / "classes.txt", labels_dir.parent / "classes.txt"):
        if candidate.is_file():
            names = candidate.read_text(encoding="utf-8").splitlines()
            return [n.strip() for n in names if n.strip()]
    return None
