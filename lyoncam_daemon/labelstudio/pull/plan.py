"""Planning (pure): from the project's tasks to the list of images the dataset should hold.

Decides for every task its image, label text, output name and side of the split, and fills the
task counts of the summary. No network, no disk: sync makes the disk match the plan afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from lyoncam_daemon.labelstudio.pull.model import Folder, Item, PullOptions, Seed, Summary
from lyoncam_daemon.labelstudio.split import side_of
from lyoncam_daemon.labelstudio.yolo import (
    Box,
    annotation_boxes,
    class_list,
    drop_upload_prefix,
    latest_annotation,
    output_name,
    parse_label_config,
    parse_yolo_text,
    source_basename,
    yolo_text,
)

log = structlog.get_logger(__name__)


def image_ref(task: Mapping[str, Any], image_key: str | None) -> str | None:
    data = task.get("data")
    if not isinstance(data, Mapping):
        return None
    if image_key and isinstance(data.get(image_key), str):
        return str(data[image_key])
    for value in data.values():  # no <Image> tag in the config: first string that looks like one
        if isinstance(value, str) and (value.startswith(("/", "http://", "https://"))):
            return value
    return None


def label_keys(ref: str) -> list[str]:
    """Stems a YOLO export may have used for this task's label file."""
    base = source_basename(ref)
    stem = base.rsplit(".", 1)[0] if "." in base else base
    bare = drop_upload_prefix(stem)
    return [stem] if bare == stem else [stem, bare]


def unmatched_labels(tasks: Sequence[Mapping[str, Any]], seed: Seed) -> list[str]:
    """Stems of the seed's label files whose image is in no task (each a failed image)."""
    matched = {k for t in tasks for k in label_keys(image_ref(t, None) or "")}
    return sorted(set(seed.labels) - matched)


@dataclass
class _Draft:
    """A task kept for the dataset, before names and class ids are decided."""

    task_id: int
    source: str
    boxes: list[Box] | None = None
    lines: list[str] | None = None
    """Label lines taken as they are from a seed's label file."""


def plan(
    tasks: Sequence[Mapping[str, Any]],
    label_config: str,
    opts: PullOptions,
    summary: Summary,
    seed: Seed | None = None,
) -> list[Item]:
    """Decide every image of the dataset, its label text, name and side; fill the summary."""
    config = parse_label_config(label_config) if label_config else None
    image_key = config.image_key if config else None
    drafts: list[_Draft] = []
    for task in sorted(tasks, key=_task_id):
        task_id = task.get("id")
        if not isinstance(task_id, int):
            continue
        summary.tasks += 1
        ref = image_ref(task, image_key)
        if ref is None:
            _problem(summary, task_id, "no image reference in the task data: skipped")
            summary.excluded += 1
            continue
        if seed is not None:
            draft = _from_seed(seed, task_id, ref, summary)
        else:
            draft = _from_annotations(task, task_id, ref, opts, summary)
        if draft is not None:
            drafts.append(draft)

    if seed is not None:
        classes, extras = list(seed.classes), list[str]()
    else:
        config_classes = config.classes if config else ()
        base = list(opts.classes) if opts.classes else list(config_classes)
        seen = [b.label for d in drafts for b in d.boxes or ()]
        classes, extras = class_list(base, seen)
        for name in extras:
            log.warning("extra_class", label=name, class_id=classes.index(name),
                        note="label used in annotations but not in the label config; kept")
    summary.classes, summary.extra_classes = classes, extras
    return _items(drafts, classes, opts, summary)


def _from_seed(seed: Seed, task_id: int, ref: str, summary: Summary) -> _Draft | None:
    text = next((seed.labels[k] for k in label_keys(ref) if k in seed.labels), None)
    if text is None:
        summary.not_in_labels_dir += 1
        return None
    lines, problems = parse_yolo_text(text, len(seed.classes) or None)
    for p in problems:
        _problem(summary, task_id, f"label file: {p}")
    if problems:
        summary.excluded += 1
        return None
    return _Draft(task_id, ref, lines=lines)


def _from_annotations(
    task: Mapping[str, Any], task_id: int, ref: str, opts: PullOptions, summary: Summary
) -> _Draft | None:
    annotations = task.get("annotations")
    ann = latest_annotation(annotations if isinstance(annotations, list) else [])
    if ann is None:
        if opts.include_unlabelled:
            return _Draft(task_id, ref)
        summary.unlabelled_skipped += 1
        return None
    converted = annotation_boxes(ann, opts.rotated)
    summary.rotated += converted.rotated
    for p in converted.problems:
        _problem(summary, task_id, p)
    if converted.malformed:
        _problem(summary, task_id, "annotation incomplete: task left out of the dataset")
        summary.excluded += 1
        return None
    return _Draft(task_id, ref, boxes=converted.boxes)


def _items(
    drafts: Sequence[_Draft], classes: Sequence[str], opts: PullOptions, summary: Summary
) -> list[Item]:
    """Names (unique, case-insensitively), label texts and sides of the kept tasks."""
    ids = {name: i for i, name in enumerate(classes)}
    items: list[Item] = []
    used: set[str] = set()
    for d in drafts:
        stem, suffix = output_name(d.source, f"task{d.task_id}")
        if stem.lower() in used:
            stem = f"{stem}_task{d.task_id}"
        used.add(stem.lower())
        label: str | None
        if d.lines is not None:
            label = "".join(line + "\n" for line in d.lines)
            for line in d.lines:
                cls = int(line.split()[0])
                summary.boxes[classes[cls] if cls < len(classes) else str(cls)] += 1
        elif d.boxes is not None:
            label = yolo_text(d.boxes, ids)
            summary.boxes.update(b.label for b in d.boxes)
        else:
            label = None
        folder: Folder
        if label is None:
            folder = "unlabelled"
            summary.unlabelled_included += 1
        else:
            folder = side_of(stem, opts.val_fraction, opts.block_hours)
            summary.labelled += 1
            summary.negatives += label == ""
        summary.split[folder] += 1
        items.append(Item(d.task_id, d.source, stem, suffix, folder, label))
    return items


def _task_id(task: Mapping[str, Any]) -> int:
    ident = task.get("id")
    return ident if isinstance(ident, int) else -1


def _problem(summary: Summary, task_id: int, message: str) -> None:
    summary.problems += 1
    log.warning("task_problem", task=task_id, problem=message)
