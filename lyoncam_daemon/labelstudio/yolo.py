"""Pure conversions from Label Studio's JSON to YOLO: classes, boxes, label lines, file names.

Label Studio stores a rectangle as its top-left corner and size in percent of the image
(``x``, ``y``, ``width``, ``height``), plus a ``rotation`` in degrees, clockwise around that
top-left corner, applied in pixel space. YOLO wants ``class cx cy w h``, normalised to [0, 1].
Nothing here touches the network or the disk.
"""

from __future__ import annotations

import math
import re
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

RotatedPolicy = Literal["enclose", "skip"]

_EPS = 1e-9


@dataclass(frozen=True)
class LabelConfig:
    classes: tuple[str, ...]
    image_key: str | None
    """The task data key of the first <Image> tag (``$image`` gives ``image``)."""


def parse_label_config(xml: str) -> LabelConfig:
    """Class names in the order of the first <RectangleLabels>' <Label> tags, and the image key.

    Labels of every <RectangleLabels> block are taken, in document order, without repeats.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ValueError(f"label config is not valid XML: {exc}") from None
    classes: list[str] = []
    for block in root.iter():
        if block.tag.lower() != "rectanglelabels":
            continue
        for label in block:
            value = label.get("value")
            if label.tag.lower() == "label" and value and value not in classes:
                classes.append(value)
    image_key = None
    for tag in root.iter():
        if tag.tag.lower() == "image":
            value = tag.get("value", "")
            if value.startswith("$"):
                image_key = value[1:]
                break
    return LabelConfig(tuple(classes), image_key)


def _timestamp(annotation: Mapping[str, Any], key: str) -> datetime | None:
    raw = annotation.get(key)
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None


def latest_annotation(annotations: Iterable[Any]) -> Mapping[str, Any] | None:
    """The most recently updated annotation that was not cancelled (skipped), or None.

    Ties (or missing dates) are broken by the larger id, i.e. the later one created.
    """
    best: Mapping[str, Any] | None = None
    best_key: tuple[float, float, int] | None = None
    for ann in annotations:
        if not isinstance(ann, Mapping) or ann.get("was_cancelled"):
            continue
        updated = _timestamp(ann, "updated_at") or _timestamp(ann, "created_at")
        created = _timestamp(ann, "created_at")
        ident = ann.get("id")
        key = (
            updated.timestamp() if updated else float("-inf"),
            created.timestamp() if created else float("-inf"),
            ident if isinstance(ident, int) else -1,
        )
        if best_key is None or key > best_key:
            best, best_key = ann, key
    return best


@dataclass(frozen=True)
class Box:
    """A box in YOLO terms: centre and size, normalised to the image."""

    label: str
    cx: float
    cy: float
    w: float
    h: float


@dataclass
class Converted:
    boxes: list[Box] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Everything reported: malformed regions and notes on regions that were kept or skipped."""
    malformed: int = 0
    """Rectangles that could not be converted: the annotation is then incomplete."""
    rotated: int = 0


def _number(value: Mapping[str, Any], key: str) -> float:
    raw = value.get(key)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise ValueError(f"{key}={raw!r} is not a number")
    return float(raw)


def _enclosing_percent(
    x: float, y: float, w: float, h: float, rotation: float, width_px: float, height_px: float
) -> tuple[float, float, float, float]:
    """Axis-aligned box (percent, top-left and size) around a rectangle rotated about (x, y)."""
    x0, y0 = x * width_px / 100, y * height_px / 100
    wp, hp = w * width_px / 100, h * height_px / 100
    a = math.radians(rotation)
    cos, sin = math.cos(a), math.sin(a)
    xs, ys = [], []
    for dx, dy in ((0.0, 0.0), (wp, 0.0), (wp, hp), (0.0, hp)):
        xs.append(x0 + dx * cos - dy * sin)
        ys.append(y0 + dx * sin + dy * cos)
    left, top = min(xs), min(ys)
    return (
        left * 100 / width_px,
        top * 100 / height_px,
        (max(xs) - left) * 100 / width_px,
        (max(ys) - top) * 100 / height_px,
    )


def convert_region(region: Mapping[str, Any], rotated: RotatedPolicy) -> tuple[Box | None, str]:
    """One result region to a Box, or None with the reason. Raises ValueError if malformed."""
    value = region.get("value")
    if not isinstance(value, Mapping):
        raise ValueError("no value object")
    labels = value.get("rectanglelabels")
    if not isinstance(labels, list) or not labels or not all(isinstance(s, str) for s in labels):
        raise ValueError("rectanglelabels is not a non-empty list of names")
    x, y = _number(value, "x"), _number(value, "y")
    w, h = _number(value, "width"), _number(value, "height")
    rotation = float(value.get("rotation") or 0.0) % 360.0
    note = ""
    if len(labels) > 1:
        note = f"several labels {labels} on one box, kept the first"
    if min(rotation, 360.0 - rotation) > _EPS:
        if rotated == "skip":
            return None, f"box rotated by {rotation:g} degrees skipped (--rotated skip)"
        width_px, height_px = region.get("original_width"), region.get("original_height")
        if not (isinstance(width_px, int | float) and isinstance(height_px, int | float)) or (
            width_px <= 0 or height_px <= 0
        ):
            raise ValueError(f"rotated by {rotation:g} degrees but no original_width/height")
        x, y, w, h = _enclosing_percent(x, y, w, h, rotation, width_px, height_px)
        note = f"box rotated by {rotation:g} degrees replaced by its enclosing axis-aligned box"
    left, top = max(0.0, x / 100), max(0.0, y / 100)
    right, bottom = min(1.0, (x + w) / 100), min(1.0, (y + h) / 100)
    if right - left <= _EPS or bottom - top <= _EPS:
        raise ValueError(f"empty box inside the image (x={x:g} y={y:g} w={w:g} h={h:g})")
    if (x / 100 < -1e-6 or y / 100 < -1e-6 or (x + w) / 100 > 1 + 1e-6
            or (y + h) / 100 > 1 + 1e-6) and not note:
        note = "box extends past the image edge, clipped"
    box = Box(labels[0], (left + right) / 2, (top + bottom) / 2, right - left, bottom - top)
    return box, note


def annotation_boxes(
    annotation: Mapping[str, Any], rotated: RotatedPolicy = "enclose"
) -> Converted:
    """Every rectangle of an annotation as a Box; everything else odd goes to ``problems``."""
    out = Converted()
    result = annotation.get("result")
    if not isinstance(result, list):
        out.problems.append("annotation has no result list")
        out.malformed += 1
        return out
    for index, region in enumerate(result):
        if not isinstance(region, Mapping):
            out.problems.append(f"region {index}: not an object")
            out.malformed += 1
            continue
        kind = region.get("type")
        if kind != "rectanglelabels":
            if kind not in ("choices", "textarea", "rating", "relation", "taxonomy"):
                out.problems.append(f"region {index}: type {kind!r} is not a rectangle, ignored")
            continue
        try:
            box, note = convert_region(region, rotated)
        except ValueError as exc:
            out.problems.append(f"region {index}: malformed rectangle: {exc}")
            out.malformed += 1
            continue
        value = region.get("value")
        rotation = value.get("rotation") if isinstance(value, Mapping) else None
        if isinstance(rotation, int | float) and min(rotation % 360, 360 - rotation % 360) > _EPS:
            out.rotated += 1
        if note:
            out.problems.append(f"region {index}: {note}")
        if box is not None:
            out.boxes.append(box)
    return out


def class_list(config_classes: Sequence[str], seen: Iterable[str]) -> tuple[list[str], list[str]]:
    """Config classes in order, then labels seen only in annotations (sorted); and those extras."""
    classes = list(config_classes)
    extras = sorted(set(seen) - set(classes))
    return classes + extras, extras


def yolo_line(class_id: int, box: Box) -> str:
    return f"{class_id} {box.cx:.8f} {box.cy:.8f} {box.w:.8f} {box.h:.8f}"


def yolo_text(boxes: Sequence[Box], class_ids: Mapping[str, int]) -> str:
    """The label file for one image: one line per box, empty for a negative."""
    return "".join(yolo_line(class_ids[b.label], b) + "\n" for b in boxes)


def parse_yolo_text(text: str, n_classes: int | None = None) -> tuple[list[str], list[str]]:
    """Valid lines of an existing YOLO label file, normalised; and problems with the others."""
    lines: list[str] = []
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split()
        if not fields:
            continue
        try:
            if len(fields) != 5:
                raise ValueError(f"{len(fields)} fields, expected 5")
            cls = int(fields[0])
            cx, cy, w, h = (float(f) for f in fields[1:])
            if cls < 0 or (n_classes is not None and cls >= n_classes):
                raise ValueError(f"class {cls} out of range")
            if not all(0.0 <= v <= 1.0 for v in (cx, cy, w, h)) or w <= 0 or h <= 0:
                raise ValueError("coordinates not within [0, 1]")
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
            continue
        lines.append(yolo_line(cls, Box("", cx, cy, w, h)))
    return lines, problems


# --- file names ------------------------------------------------------------------------------

_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-(?=.)")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)),
             *(f"lpt{i}" for i in range(10))}
MAX_STEM = 120
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def source_basename(url: str) -> str:
    """The last path component a server gave for an image, decoded (still unsafe)."""
    parts = urlsplit(url)
    path = parts.path
    if "filepath=" in parts.query or "d=" in parts.query:  # /storage-data/?filepath=, local-files
        for pair in parts.query.split("&"):
            key, _, val = pair.partition("=")
            if key in ("filepath", "d"):
                path = val
    name = unquote(path).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return name


def sanitize_stem(raw: str, fallback: str) -> str:
    """A file stem safe on any file system: ASCII letters, digits, ``._-``; never empty or hidden.

    Accents are folded (``é`` → ``e``), everything else unsafe becomes ``_``, path separators
    cannot survive, and the result is at most MAX_STEM characters.
    """
    folded = unicodedata.normalize("NFKD", raw)
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    stem = _UNSAFE.sub("_", folded).strip("._-")
    stem = re.sub(r"\.{2,}", ".", stem)[:MAX_STEM].rstrip("._-")
    if not stem or stem.split(".")[0].lower() in _RESERVED:
        stem = f"{fallback}_{stem}" if stem else fallback
    return stem


def drop_upload_prefix(name: str) -> str:
    """`name` without the ``1a2b3c4d-`` Label Studio puts before every uploaded file."""
    return _UPLOAD_PREFIX.sub("", name)


def output_name(source_url: str, fallback: str) -> tuple[str, str]:
    """Safe (stem, suffix) for an image: upload prefix dropped, suffix from a short known list."""
    base = drop_upload_prefix(source_basename(source_url))
    stem, dot, suffix = base.rpartition(".")
    if not dot:
        stem, suffix = base, ""
    ext = "." + suffix.lower()
    if ext == ".jpeg":
        ext = ".jpg"
    if ext not in IMAGE_SUFFIXES:
        ext = ".jpg"
        stem = base
    return sanitize_stem(stem, fallback), ext
