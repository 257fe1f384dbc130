"""Pull a Label Studio project into a YOLO dataset ultralytics can train on, resumably.

Layout of the output directory::

    images/{train,val}/<stem>.<ext>   labels/{train,val}/<stem>.txt   data.yaml   classes.txt
    images/unlabelled/<stem>.<ext>    (only with --include-unlabelled; not in data.yaml)
    .lyoncam-pull.json                (manifest: where each file came from, its SHA-256)

Each run plans the whole dataset from the tasks API first (pure), then makes the disk match:
files already present and unchanged are kept, files whose split changed are moved, missing images
are downloaded (decode-checked, written atomically), files of tasks that vanished are removed.
Only files listed in the manifest are ever moved or removed.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import quote, urlsplit

import structlog
import yaml
from PIL import Image, UnidentifiedImageError

from lyoncam_daemon import atomic
from lyoncam_daemon.labelstudio.client import (
    HTTPError,
    LabelStudioClient,
    display_base,
    strip_query,
)
from lyoncam_daemon.labelstudio.split import side_of
from lyoncam_daemon.labelstudio.yolo import (
    Box,
    RotatedPolicy,
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

MANIFEST = ".lyoncam-pull.json"
Folder = Literal["train", "val", "unlabelled"]
Outcome = Literal["fetched", "present", "failed"]


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


@dataclass
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


# --- planning (pure) ---------------------------------------------------------------------------


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


def image_urls(ref: str, base_url: str) -> list[str]:
    """Where to try to fetch an image, in order. Empty if the reference cannot be fetched."""
    parts = urlsplit(ref)
    own = not parts.netloc or (
        (parts.scheme.lower(), parts.netloc.lower())
        == (urlsplit(base_url).scheme.lower(), urlsplit(base_url).netloc.lower())
    )
    if parts.scheme and parts.scheme.lower() not in ("http", "https"):
        return []  # s3://, gs://, ...: cloud storage the server would have to presign
    if own and parts.path.startswith("/data/upload/"):
        rel = parts.path[len("/data/") :]
        return [ref, f"/storage-data/uploaded/?filepath={quote(rel, safe='/')}"]
    if not parts.scheme and not ref.startswith("/"):
        return []
    return [ref]


def label_keys(ref: str) -> list[str]:
    """Stems a YOLO export may have used for this task's label file."""
    base = source_basename(ref)
    stem = base.rsplit(".", 1)[0] if "." in base else base
    bare = drop_upload_prefix(stem)
    return [stem] if bare == stem else [stem, bare]


@dataclass
class _Draft:
    task_id: int
    source: str
    boxes: list[Box] | None = None
    lines: list[str] | None = None


def plan(
    tasks: Sequence[Mapping[str, Any]],
    label_config: str,
    opts: PullOptions,
    base_url: str,
    summary: Summary,
    export_labels: Mapping[str, str] | None = None,
    export_classes: Sequence[str] | None = None,
) -> list[Item]:
    """Decide every image of the dataset, its label text, name and side; fill the summary."""
    config = parse_label_config(label_config) if label_config else None
    image_key = config.image_key if config else None
    drafts: list[_Draft] = []
    seen_labels: list[str] = []
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
        if export_labels is not None:
            text = next((export_labels[k] for k in label_keys(ref) if k in export_labels), None)
            if text is None:
                summary.not_in_labels_dir += 1
                continue
            n = len(export_classes) if export_classes else None
            lines, problems = parse_yolo_text(text, n)
            for p in problems:
                _problem(summary, task_id, f"label file: {p}")
            if problems:
                summary.excluded += 1
                continue
            drafts.append(_Draft(task_id, ref, lines=lines))
            continue
        annotations = task.get("annotations")
        ann = latest_annotation(annotations if isinstance(annotations, list) else [])
        if ann is None:
            if opts.include_unlabelled:
                drafts.append(_Draft(task_id, ref))
            else:
                summary.unlabelled_skipped += 1
            continue
        converted = annotation_boxes(ann, opts.rotated)
        summary.rotated += converted.rotated
        for p in converted.problems:
            _problem(summary, task_id, p)
        if converted.malformed:
            _problem(summary, task_id, "annotation incomplete: task left out of the dataset")
            summary.excluded += 1
            continue
        drafts.append(_Draft(task_id, ref, boxes=converted.boxes))
        seen_labels.extend(b.label for b in converted.boxes)

    if export_labels is not None:
        classes, extras = list(export_classes or ()), list[str]()
    else:
        base = list(opts.classes) if opts.classes else list(config.classes if config else ())
        classes, extras = class_list(base, seen_labels)
        for name in extras:
            log.warning("extra_class", label=name, class_id=classes.index(name),
                        note="label used in annotations but not in the label config; kept")
    summary.classes, summary.extra_classes = classes, extras
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
    for candidate in (labels_dir / "classes.txt", labels_dir.parent / "classes.txt"):
        if candidate.is_file():
            names = candidate.read_text(encoding="utf-8").splitlines()
            return [n.strip() for n in names if n.strip()]
    return None


# --- disk --------------------------------------------------------------------------------------


def write_atomic(path: Path, data: bytes) -> None:
    """Create the folder if needed, then replace `path` atomically (see atomic.py)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_atomic(path, data)


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


def _inside(out: Path, rel: str) -> Path:
    path = (out / rel).resolve()
    if not path.is_relative_to(out.resolve()):
        raise PullError(f"refusing a path outside the output directory: {rel!r}")
    return path


def load_manifest(out: Path) -> dict[str, Any]:
    path = out / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("manifest_unreadable", path=str(path), note="starting afresh")
        return {}
    return data if isinstance(data, dict) else {}


def check_manifest_owner(out: Path, base_url: str, project: int) -> dict[str, Any]:
    """The manifest of ``out``, refusing one written for another server or project."""
    manifest = load_manifest(out)
    if manifest and (manifest.get("base_url"), manifest.get("project")) != (base_url, project):
        raise PullError(
            f"{out} holds a pull of project {manifest.get('project')} from "
            f"{manifest.get('base_url')}; choose another --out"
        )
    return manifest


class Progress(Protocol):
    def start(self, total: int) -> None: ...
    def advance(self, item: Item, outcome: Outcome) -> None: ...
    def close(self) -> None: ...


class NoProgress:
    def start(self, total: int) -> None:
        pass

    def advance(self, item: Item, outcome: Outcome) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class _Sync:
    """What the disk has for one planned item once the present files are accounted for."""

    item: Item
    sha: str | None = None
    size: int | None = None


async def _fetch_one(client: LabelStudioClient, item: Item) -> bytes:
    urls = image_urls(item.source, client.base_url)
    if not urls:
        raise ValueError(
            f"image reference {strip_query(item.source)!r} is not fetchable (cloud storage URI?)"
        )
    last = ""
    for url in urls:
        resp = await client.request("GET", url)
        if resp.status == 200:
            return resp.body
        last = f"HTTP {resp.status} for {urlsplit(url).path}"
        if resp.status not in (400, 403, 404):
            break
    raise ValueError(last)


async def sync(
    client: LabelStudioClient,
    items: Sequence[Item],
    opts: PullOptions,
    summary: Summary,
    progress: Progress,
    manifest: Mapping[str, Any],
) -> dict[str, Any]:
    """Make the output directory match the plan; return the new manifest.

    `manifest` is the previous run's (see `check_manifest_owner`), empty on a first run.
    """
    out = opts.out
    previous: dict[str, Any] = manifest.get("items", {}) if manifest else {}
    entries: dict[str, Any] = {}
    todo: list[Item] = []

    progress.start(len(items))
    for item in items:
        prev = previous.get(item.stem)
        target = _inside(out, item.image_rel)
        found: tuple[str, int] | None = None
        if isinstance(prev, dict) and prev.get("source") == item.source:
            old = _inside(out, str(prev.get("image", "")))
            if old.is_file():
                data = old.read_bytes()
                if sha256(data) == prev.get("sha256"):
                    if old != target:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(old, target)
                        summary.moved += 1
                    found = (str(prev["sha256"]), len(data))
        elif prev is None and target.is_file():  # no manifest (lost?): keep a valid file
            data = target.read_bytes()
            try:
                await asyncio.to_thread(check_image, data)
                found = (sha256(data), len(data))
            except ValueError:
                found = None
        if found is None:
            todo.append(item)
            continue
        summary.present += 1
        _write_label(out, item, prev, summary)
        entries[item.stem] = _entry(item, *found)
        progress.advance(item, "present")

    async def fetch(item: Item) -> None:
        try:
            data = await _fetch_one(client, item)
            await asyncio.to_thread(check_image, data)
            await asyncio.to_thread(write_atomic, _inside(out, item.image_rel), data)
        except (ValueError, HTTPError, OSError) as exc:
            summary.failed += 1
            summary.failures.append(f"task {item.task_id} ({item.stem}): {exc}")
            log.error("image_failed", task=item.task_id, stem=item.stem, error=str(exc))
            progress.advance(item, "failed")
            return
        summary.fetched += 1
        _write_label(out, item, previous.get(item.stem), summary)
        entries[item.stem] = _entry(item, sha256(data), len(data))
        log.debug("image_fetched", task=item.task_id, stem=item.stem, bytes=len(data))
        progress.advance(item, "fetched")

    # The client's semaphore caps concurrency; a bounded window keeps memory flat on big projects.
    window = asyncio.Semaphore(client.concurrency * 4)

    async def bounded(item: Item) -> None:
        async with window:
            await fetch(item)

    await asyncio.gather(*(bounded(item) for item in todo))
    progress.close()

    # Files of a previous run that the plan no longer has (task deleted, --include-unlabelled
    # dropped, a failed re-download): remove them, but only those the manifest lists.
    for stem, prev in previous.items():
        if stem in entries or not isinstance(prev, dict):
            continue
        for key in ("image", "label"):
            rel = prev.get(key)
            if isinstance(rel, str) and rel:
                path = _inside(out, rel)
                if path.is_file():
                    path.unlink()
        summary.removed += 1
        log.info("removed", stem=stem, task=prev.get("task"))
    # A label file moved by a split change leaves its old copy behind: remove it too.
    for stem, entry in entries.items():
        prev = previous.get(stem)
        if isinstance(prev, dict) and prev.get("label") and prev.get("label") != entry["label"]:
            old_label = _inside(out, str(prev["label"]))
            if old_label.is_file():
                old_label.unlink()
    return {
        "version": 1,
        "base_url": client.base_url,
        "project": opts.project,
        "classes": summary.classes,
        "items": dict(sorted(entries.items())),
    }


def _entry(item: Item, digest: str, size: int) -> dict[str, Any]:
    return {
        "task": item.task_id,
        "source": item.source,
        "image": item.image_rel,
        "label": item.label_rel,
        "sha256": digest,
        "size": size,
    }


def _write_label(out: Path, item: Item, prev: Any, summary: Summary) -> None:
    if item.label_rel is None or item.label is None:
        return
    path = _inside(out, item.label_rel)
    data = item.label.encode()
    if path.is_file():
        if path.read_bytes() == data:
            return
        summary.labels_changed += 1
        log.info("label_changed", stem=item.stem, task=item.task_id)
    elif isinstance(prev, dict) and prev.get("label"):
        old = _inside(out, str(prev["label"]))
        same = old.is_file() and old.read_bytes() == data
        if not same:
            summary.labels_changed += 1
            log.info("label_changed", stem=item.stem, task=item.task_id)
    else:
        summary.labels_new += 1
    write_atomic(path, data)


def data_yaml(out: Path, classes: Sequence[str]) -> str:
    doc = {
        "path": str(out.resolve()),
        "train": "images/train",
        "val": "images/val",
        "names": dict(enumerate(classes)),
    }
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def write_dataset_files(out: Path, classes: Sequence[str], manifest: Mapping[str, Any]) -> None:
    for folder in ("images/train", "images/val", "labels/train", "labels/val"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    write_atomic(out / "classes.txt", "".join(f"{c}\n" for c in classes).encode())
    write_atomic(out / "data.yaml", data_yaml(out, classes).encode())
    write_atomic(out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=False).encode())


async def run_pull(
    client: LabelStudioClient, opts: PullOptions, progress: Progress | None = None
) -> Summary:
    summary = Summary()
    manifest = check_manifest_owner(opts.out, client.base_url, opts.project)
    try:
        project = await client.get_project(opts.project)
    except HTTPError as exc:
        if exc.status != 404:
            raise
        raise PullError(
            f"project {opts.project} not found on {display_base(client.base_url)}"
        ) from None
    label_config = project.get("label_config")
    if not isinstance(label_config, str):
        raise PullError(f"project {opts.project} has no label config")
    export_labels = export_classes = None
    if opts.labels_dir is not None:
        export_labels = read_labels_dir(opts.labels_dir)
        export_classes = list(opts.classes) if opts.classes else find_export_classes(
            opts.labels_dir
        )
        if export_classes is None:
            raise PullError(
                f"no classes.txt in or beside {opts.labels_dir}: pass --classes in the order "
                "of the export's class ids"
            )
        log.info("labels_dir_read", files=len(export_labels), classes=len(export_classes))
    tasks = [t async for t in client.iter_tasks(opts.project, opts.page_size)]
    log.info("tasks_listed", project=opts.project, tasks=len(tasks))
    items = plan(
        tasks, label_config, opts, client.base_url, summary, export_labels, export_classes
    )
    if export_labels is not None:
        matched = {k for t in tasks for k in label_keys(image_ref(t, None) or "")}
        for stem in sorted(set(export_labels) - matched):
            summary.failed += 1
            summary.failures.append(f"label file {stem}.txt: no task of the project has its image")
    opts.out.mkdir(parents=True, exist_ok=True)
    new_manifest = await sync(client, items, opts, summary, progress or NoProgress(), manifest)
    write_dataset_files(opts.out, summary.classes, new_manifest)
    if summary.split["val"] == 0 and summary.split["train"] > 0:
        log.warning("empty_val_split", note="no image fell in val: too few camera-hour groups?")
    return summary


def format_summary(s: Summary, out: Path) -> str:
    lines = [
        f"dataset: {out}",
        f"tasks: {s.tasks} ({s.labelled} labelled of which {s.negatives} negatives, "
        f"{s.unlabelled_skipped} unlabelled skipped, {s.unlabelled_included} unlabelled included, "
        f"{s.excluded} left out for problems" + (
            f", {s.not_in_labels_dir} not in the labels dir" if s.not_in_labels_dir else "")
        + ")",
        f"split: train {s.split['train']}, val {s.split['val']}"
        + (f", unlabelled {s.split['unlabelled']}" if s.split["unlabelled"] else ""),
        "boxes per class: " + (", ".join(
            f"{name} {s.boxes.get(name, 0)}" for name in s.classes
        ) or "none") + f" (total {sum(s.boxes.values())})",
        f"images: fetched {s.fetched}, skipped (already present) {s.present}, failed {s.failed}",
        f"changes: {s.fetched} images added, {s.moved} moved between train/val, "
        f"{s.labels_new} labels new, {s.labels_changed} labels changed, {s.removed} removed",
    ]
    if s.extra_classes:
        lines.append("classes not in the label config (kept, appended): "
                     + ", ".join(s.extra_classes))
    if s.rotated:
        lines.append(f"rotated boxes: {s.rotated} (see warnings)")
    if s.problems:
        lines.append(f"problems reported: {s.problems} (see warnings)")
    lines.extend(f"failed: {f}" for f in s.failures)
    return "\n".join(lines)

