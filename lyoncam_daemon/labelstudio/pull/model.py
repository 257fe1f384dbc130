"""What a pull works with: its options, the planned images, and the summary it reports.

Shared by planning (which fills most of the summary), sync (which counts the files) and the CLI
(which prints it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lyoncam_daemon.labelstudio.yolo import RotatedPolicy

Folder = Literal["train", "val", "unlabelled"]
ImageResult = Literal["fetched", "present", "failed"]
"""What became of one planned image in a pull (the capture side's `dedup.Outcome` is unrelated)."""


class PullError(Exception):
    """The pull cannot proceed at all (bad project, unusable output directory, ...)."""


@dataclass(frozen=True)
class PullOptions:
    project: int
    out: Path
    classes: tuple[str, ...] | None = None
    include_unlabelled: bool = False
    val_fraction: float = 0.2
    block_hours: float = 1.0
    rotated: RotatedPolicy = "enclose"
    labels_dir: Path | None = None
    page_size: int = 100


@dataclass(frozen=True)
class Item:
    """One image of the planned dataset."""

    task_id: int
    source: str
    stem: str
    suffix: str
    folder: Folder
    label: str | None
    """The label file's text; None for an unlabelled image (no label file)."""

    @property
    def image_rel(self) -> str:
        return f"images/{self.folder}/{self.stem}{self.suffix}"

    @property
    def label_rel(self) -> str | None:
        return None if self.label is None else f"labels/{self.folder}/{self.stem}.txt"


@dataclass
class Summary:
    classes: list[str] = field(default_factory=list)
    extra_classes: list[str] = field(default_factory=list)
    tasks: int = 0
    labelled: int = 0
    negatives: int = 0
    unlabelled_skipped: int = 0
    unlabelled_included: int = 0
    excluded: int = 0
    not_in_labels_dir: int = 0
    problems: int = 0
    rotated: int = 0
    boxes: Counter[str] = field(default_factory=Counter)
    split: Counter[str] = field(default_factory=Counter)
    fetched: int = 0
    present: int = 0
    failed: int = 0
    moved: int = 0
    labels_new: int = 0
    labels_changed: int = 0
    removed: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0


@dataclass(frozen=True)
class Seed:
    """The labels folder of a Label Studio YOLO export (seed mode, ``--labels-dir``)."""

    labels: dict[str, str]
    """Label file stem → its text."""
    classes: tuple[str, ...]
    """Class names in the export's id order."""
