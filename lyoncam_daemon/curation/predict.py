"""`predict`: the user's own ONNX detector on frames, as YOLO label files with a score per box.

No detector ships with lyoncam (no package these machines install carries weights): the model
is the user's, typically the one trained on a first `pull` and exported by ultralytics. Two
output layouts are read, told apart by which axis holds the few channels:

- YOLOv8 / YOLO11: `[batch, 4 + classes, N]`: cx, cy, w, h, then one score per class;
- YOLOv5 / YOLOX:  `[batch, N, 5 + classes]`: cx, cy, w, h, objectness, then class
  probabilities; a box's score is objectness x class probability.

Boxes are in the model's input pixels. A frame reaches the model letterboxed the way
ultralytics trains: scaled to fit the model's own input size (read from the file), centred
on grey 114, RGB in [0, 1]. Boxes above `conf` go through per-class NMS and are mapped back
to the frame's pixels.

The geometry and decoding are pure functions; `Detector` holds the onnxruntime session
(CPU only), `predict_frames` runs it over frames, `write_labels` and `recorder` keep the
results (YOLO label files, the index).
"""

from __future__ import annotations

import ast
import hashlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from lyoncam_daemon.curation import predictions
from lyoncam_daemon.curation.predictions import FoundBox
from lyoncam_daemon.storage.atomic import write_atomic

Array = npt.NDArray[np.float32]

#: ultralytics' letterbox grey: the padding the model saw in training.
PAD_GREY = 114
#: Detections kept per frame after NMS (ultralytics' default).
MAX_DET = 300
#: Input size used when the file leaves it open (a dynamic-shape export): ultralytics' default.
DEFAULT_SIZE = 640


class ModelError(Exception):
    """The model cannot be used; the message is one line naming the file and the culprit."""


class Layout(Enum):
    V8 = "YOLOv8/YOLO11 [batch, 4 + classes, N]"
    V5 = "YOLOv5/YOLOX [batch, N, 5 + classes]"

    @property
    def extra(self) -> int:
        """Channels before the class scores: the box, plus objectness for YOLOv5/YOLOX."""
        return 4 if self is Layout.V8 else 5


Dim = int | str | None
"""One dimension of a declared shape: a number, or a name / None when the file leaves it open."""


def _shown(shape: Sequence[Dim]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def read_layout(shape: Sequence[Dim]) -> tuple[Layout, int | None]:
    """The layout of a detection output and its class count (None while the shape leaves it
    open); ModelError naming the shape when it is neither layout.

    The channels are the fixed, smaller one of the two last axes (N is in the thousands, or
    left open by a dynamic export); where they sit gives the layout.
    """
    def fixed(d: Dim) -> int | None:
        return d if isinstance(d, int) and d > 0 else None

    problem = None
    if len(shape) == 3:
        a, b = fixed(shape[1]), fixed(shape[2])
        if a is not None and (b is None or a < b) and a >= Layout.V8.extra + 1:
            return Layout.V8, a - Layout.V8.extra
        if b is not None and (a is None or b < a) and b >= Layout.V5.extra + 1:
            return Layout.V5, b - Layout.V5.extra
        if a is None and b is None:
            return Layout.V8, None  # both open: told apart on the first batch's real shape
    else:
        problem = f"rank {len(shape)}"
    raise ModelError(
        f"output {_shown(shape)} is neither {Layout.V8.value} nor {Layout.V5.value}"
        + (f" ({problem})" if problem else ""))


# --- letterbox -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Letterbox:
    """Where a frame of `width` x `height` lands in the model's input: scaled to `scaled_w` x
    `scaled_h`, its top-left corner at (`left`, `top`)."""

    width: int
    height: int
    scaled_w: int
    scaled_h: int
    left: int
    top: int

    @property
    def sx(self) -> float:
        return self.scaled_w / self.width

    @property
    def sy(self) -> float:
        return self.scaled_h / self.height


def letterbox_geometry(width: int, height: int, in_w: int, in_h: int) -> Letterbox:
    """Fit the frame inside the input keeping its aspect ratio, centred."""
    r = min(in_w / width, in_h / height)
    sw, sh = max(1, min(in_w, round(width * r))), max(1, min(in_h, round(height * r)))
    return Letterbox(width, height, sw, sh, (in_w - sw) // 2, (in_h - sh) // 2)


def letterbox(image: Image.Image, in_w: int, in_h: int,
              size: tuple[int, int] | None = None) -> tuple[Array, Letterbox]:
    """The model input of one frame (CHW, RGB in [0, 1]) and its geometry. `size` is the
    frame's own size when `image` was decoded smaller (JPEG draft mode)."""
    width, height = size if size is not None else image.size
    box = letterbox_geometry(width, height, in_w, in_h)
    scaled = image.convert("RGB").resize((box.scaled_w, box.scaled_h), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (in_w, in_h), (PAD_GREY,) * 3)
    canvas.paste(scaled, (box.left, box.top))
    pixels = np.asarray(canvas, dtype=np.float32) / np.float32(255.0)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)), box


def load_frame(path: Path, in_w: int, in_h: int) -> tuple[Array, Letterbox]:
    """Decode a frame (JPEG DCT-scaled down to no less than the input size: a fraction of a
    full decode) and letterbox it. OSError / ValueError when it cannot be read."""
    with Image.open(path) as im:
        size = im.size
        im.draft("RGB", (in_w, in_h))
        im.load()
        return letterbox(im, in_w, in_h, size)


# --- decoding ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detection:
    """One box in frame pixels (corners), its class id and score."""

    class_id: int
    x0: float
    y0: float
    x1: float
    y1: float
    score: float


def candidates(out: npt.NDArray[Any], layout: Layout, conf: float
               ) -> tuple[Array, Array, npt.NDArray[np.int64]]:
    """One frame's raw output → boxes (x0, y0, x1, y1, input pixels), scores and classes of
    the rows scoring at least `conf` (best class per row)."""
    rows = np.asarray(out, dtype=np.float32)
    if layout is Layout.V8:
        rows = rows.T  # [N, 4 + nc]
    scores_all = rows[:, layout.extra:]
    if layout is Layout.V5:
        scores_all = scores_all * rows[:, 4:5]
    if scores_all.shape[1] == 0:
        empty = np.zeros((0,), np.float32)
        return np.zeros((0, 4), np.float32), empty, np.zeros((0,), np.int64)
    classes = scores_all.argmax(axis=1)
    scores = scores_all[np.arange(len(rows)), classes]
    keep = scores >= conf
    cx, cy, w, h = (rows[keep, i] for i in range(4))
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return boxes.astype(np.float32), scores[keep].astype(np.float32), classes[keep]


def nms(boxes: Array, scores: Array, classes: npt.NDArray[np.int64], iou: float,
        max_det: int = MAX_DET) -> list[int]:
    """Indices kept by greedy per-class non-maximum suppression, best score first: a box goes
    when it overlaps a better one of its class by more than `iou`."""
    if len(boxes) == 0:
        return []
    # Shift each class far apart so one pass suppresses within classes only.
    shift = (classes.astype(np.float32) * (float(np.abs(boxes).max()) + 1.0))[:, None]
    b = boxes + shift
    area = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    while order.size and len(kept) < max_det:
        i = int(order[0])
        kept.append(i)
        rest = order[1:]
        iw = (np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0])).clip(0)
        ih = (np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1])).clip(0)
        inter = iw * ih
        union = area[i] + area[rest] - inter
        overlap = np.where(union > 0, inter / np.where(union > 0, union, 1), 0)
        order = rest[overlap <= iou]
    return kept


def to_frame(boxes: Array, box: Letterbox) -> Array:
    """Input-pixel corners → frame-pixel corners, clipped to the frame."""
    out = np.empty_like(boxes)
    out[:, [0, 2]] = ((boxes[:, [0, 2]] - box.left) / box.sx).clip(0, box.width)
    out[:, [1, 3]] = ((boxes[:, [1, 3]] - box.top) / box.sy).clip(0, box.height)
    return out


def detections(out: npt.NDArray[Any], layout: Layout, box: Letterbox, conf: float,
               iou: float, max_det: int = MAX_DET) -> list[Detection]:
    """One frame's raw output → its detections in frame pixels, best first."""
    boxes, scores, classes = candidates(out, layout, conf)
    kept = nms(boxes, scores, classes, iou, max_det)
    mapped = to_frame(boxes[kept], box) if kept else np.zeros((0, 4), np.float32)
    found = []
    for row, i in zip(mapped, kept, strict=True):
        x0, y0, x1, y1 = (float(v) for v in row)
        if x1 > x0 and y1 > y0:  # a box wholly in the padding maps to nothing
            found.append(Detection(int(classes[i]), x0, y0, x1, y1, float(scores[i])))
    return found


# --- YOLO label files ----------------------------------------------------------------------


def yolo_lines(found: Iterable[Detection], width: int, height: int) -> str:
    """`class cx cy w h score` per box, normalised to the frame (what `push --predictions`
    reads); empty for a frame with nothing found."""
    return "".join(
        f"{d.class_id} {(d.x0 + d.x1) / 2 / width:.6f} {(d.y0 + d.y1) / 2 / height:.6f} "
        f"{(d.x1 - d.x0) / width:.6f} {(d.y1 - d.y0) / height:.6f} {d.score:.4f}\n"
        for d in found)


# --- the model -----------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_version(path: Path, sha256: str) -> str:
    """`detector.onnx@1a2b3c4d5e6f`: the file a prediction came from, and which version of it."""
    return f"{path.name}@{sha256[:12]}"


def names_of_metadata(meta: Mapping[str, str]) -> list[str] | None:
    """Class names from an ultralytics export's `names` metadata (`{0: 'person', ...}`)."""
    raw = meta.get("names")
    if not raw:
        return None
    try:
        names = ast.literal_eval(raw)  # a literal, never code
    except (ValueError, SyntaxError):
        return None
    if isinstance(names, dict) and all(isinstance(k, int) for k in names):
        return [str(names[k]) for k in sorted(names)]
    if isinstance(names, list):
        return [str(n) for n in names]
    return None


class Detector:
    """An ONNX detector on CPU: its input size, output layout, class names and version."""

    def __init__(self, path: Path, names: Sequence[str] | None = None,
                 threads: int | None = None) -> None:
        import onnxruntime as ort  # heavy: only the commands that predict load it

        self.path = path
        try:
            self.sha256 = file_sha256(path)
        except OSError as exc:
            raise ModelError(f"{path}: {exc.strerror or exc}") from None
        self.version = model_version(path, self.sha256)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # its warnings are not the user's business
        options.intra_op_num_threads = threads if threads is not None else default_threads()
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{path}: not a model onnxruntime can load ({first})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            shown = ", ".join(f"{i.name} {_shown(i.shape)}" for i in inputs)
            raise ModelError(f"{path}: expected one image input [batch, 3, height, width], "
                             f"got {shown or 'none'}")
        shape = inputs[0].shape
        if shape[1] not in (3, None) and not isinstance(shape[1], str):
            raise ModelError(f"{path}: input {_shown(shape)} does not take 3 colour channels")
        self.input_name = inputs[0].name
        self.in_h = shape[2] if isinstance(shape[2], int) else DEFAULT_SIZE
        self.in_w = shape[3] if isinstance(shape[3], int) else DEFAULT_SIZE
        #: Frames per run: the file's fixed batch (ultralytics' default export is 1), else open.
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.output_name = outputs[0].name
        try:
            self.layout, nc = read_layout(outputs[0].shape)
        except ModelError as exc:
            raise ModelError(f"{path}: {exc}") from None
        self.declared = list(outputs[0].shape)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.names: list[str] | None = list(names) if names is not None else names_of_metadata(
            meta)
        if nc is not None and self.names is not None and len(self.names) != nc:
            raise ModelError(f"{path}: output {_shown(outputs[0].shape)} has {nc} classes "
                             f"but {len(self.names)} class names")

    def batch_size(self, wanted: int) -> int:
        return self.fixed_batch if self.fixed_batch is not None else wanted

    def run(self, inputs: Sequence[Array]) -> list[npt.NDArray[Any]]:
        """The raw output of each frame's input (frames beyond the file's fixed batch are run
        in turn). ModelError naming the shape when the output is neither layout."""
        per = self.batch_size(len(inputs))
        outs: list[npt.NDArray[Any]] = []
        for start in range(0, len(inputs), per):
            batch = np.stack(inputs[start:start + per])
            try:
                (raw,) = self.session.run([self.output_name], {self.input_name: batch})
            except Exception as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise ModelError(f"{self.path}: inference failed ({first})") from None
            if raw.ndim != 3 or raw.shape[0] != len(batch):
                raise ModelError(f"{self.path}: output {_shown(list(raw.shape))} is neither "
                                 f"{Layout.V8.value} nor {Layout.V5.value}")
            outs.extend(raw)
        if outs and not all(isinstance(d, int) for d in self.declared[1:]):
            self._settle(outs[0].shape)
        return outs

    def _settle(self, shape: tuple[int, ...]) -> None:
        """A shape left open in the file: the layout from the first real output."""
        try:
            layout, nc = read_layout([1, *shape])
        except ModelError as exc:
            raise ModelError(f"{self.path}: {exc}") from None
        if self.names is not None and nc is not None and len(self.names) != nc:
            raise ModelError(f"{self.path}: output {_shown([1, *shape])} has {nc} classes "
                             f"but {len(self.names)} class names")
        self.layout, self.declared = layout, [1, *shape]

    def detect(self, inputs: Sequence[Array], boxes: Sequence[Letterbox], conf: float,
               iou: float) -> list[list[Detection]]:
        outs = self.run(inputs)
        return [detections(o, self.layout, b, conf, iou) for o, b in zip(outs, boxes,
                                                                         strict=True)]


def default_threads() -> int:
    """onnxruntime's intra-op threads: every core but one, left to the thread decoding the
    next batch."""
    return max(1, (os.cpu_count() or 2) - 1)


# --- a run over frames (blocking: call it in a thread, or from a command) --------------------


@dataclass(frozen=True)
class Predicted:
    """One frame's result: its detections and the frame's own size."""

    key: str
    width: int
    height: int
    found: list[Detection]


@dataclass
class RunSummary:
    frames: int = 0
    boxes: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class _Loaded:
    """A frame ready for the model, or why it could not be read."""

    key: str
    x: Array | None = None
    box: Letterbox | None = None
    error: str = ""


def _load(key: str, path: Path, in_w: int, in_h: int) -> _Loaded:
    try:
        x, box = load_frame(path, in_w, in_h)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        return _Loaded(key, error=str(exc) or type(exc).__name__)
    return _Loaded(key, x, box)


def predict_frames(detector: Detector, frames: Sequence[tuple[str, Path]], conf: float,
                   iou: float, batch: int, on_batch: Callable[[list[Predicted]], None],
                   progress: Callable[[int], object] | None = None) -> RunSummary:
    """Run the detector over `frames` (key, path) `batch` at a time; each batch's results go
    to `on_batch` as soon as they are known, so an interrupted run keeps what it did.

    The next batch is decoded and letterboxed in a second thread while the model runs on
    this one (Pillow and onnxruntime both release the GIL). A frame that cannot be read is
    listed in `failed`, and the run goes on.
    """
    done = RunSummary()
    started = time.perf_counter()
    per = max(1, batch)
    chunks = [frames[i:i + per] for i in range(0, len(frames), per)]

    def decode(chunk: Sequence[tuple[str, Path]]) -> list[_Loaded]:
        return [_load(k, p, detector.in_w, detector.in_h) for k, p in chunk]

    with ThreadPoolExecutor(1, thread_name_prefix="lyoncam-decode") as pool:
        ahead = pool.submit(decode, chunks[0]) if chunks else None
        for n in range(len(chunks)):
            assert ahead is not None
            loaded = ahead.result()
            ahead = pool.submit(decode, chunks[n + 1]) if n + 1 < len(chunks) else None
            done.failed.extend((item.key, item.error) for item in loaded if item.error)
            ready = [(item.key, item.x, item.box) for item in loaded
                     if item.x is not None and item.box is not None]
            results: list[Predicted] = []
            if ready:
                found = detector.detect([x for _, x, _ in ready], [b for _, _, b in ready],
                                        conf, iou)
                results = [Predicted(key, box.width, box.height, dets)
                           for (key, _, box), dets in zip(ready, found, strict=True)]
            on_batch(results)
            done.frames += len(results)
            done.boxes += sum(len(r.found) for r in results)
            if progress is not None:
                progress(len(loaded))
    done.seconds = time.perf_counter() - started
    return done


def write_labels(out: Path, results: Iterable[Predicted]) -> None:
    """`out/labels/<frame stem>.txt` per frame (empty when nothing was found: the frame was
    looked at). Frame stems are unique: camera and time (storage/layout.py)."""
    labels = out / "labels"
    labels.mkdir(parents=True, exist_ok=True)
    for r in results:
        stem = r.key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        # Not fsynced: a label file is remade by running `predict` again, and thousands of
        # fsyncs would cost more than the model on a slow disk.
        write_atomic(labels / f"{stem}.txt", yolo_lines(r.found, r.width, r.height).encode(),
                     durable=False)


def write_classes(out: Path, names: Sequence[str]) -> None:
    """`out/classes.txt`: the names of the class ids, as `push --predictions` reads them."""
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "classes.txt", "".join(f"{n}\n" for n in names).encode())


def read_names(path: Path) -> list[str]:
    """Class names in id order from a `data.yaml` (`names:` list or id map, as ultralytics
    and `pull` write it) or a `classes.txt` (one a line). ModelError naming the file."""
    import yaml

    try:
        text = path.read_text()
    except OSError as exc:
        raise ModelError(f"--names {path}: {exc.strerror or exc}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ModelError(f"--names {path}: not YAML") from None
        names = doc.get("names") if isinstance(doc, dict) else None
        if isinstance(names, dict) and all(isinstance(k, int) for k in names):
            return [str(names[k]) for k in sorted(names)]
        if isinstance(names, list) and names:
            return [str(n) for n in names]
        raise ModelError(f"--names {path}: no `names:` list or id map")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise ModelError(f"--names {path}: no class names")
    return names


def found_boxes(r: Predicted, names: Sequence[str] | None) -> list[FoundBox]:
    """A frame's detections as the index keeps them (class name when known)."""
    return [FoundBox(d.class_id,
                     names[d.class_id] if names is not None and d.class_id < len(names) else None,
                     d.score) for d in r.found]


def recorder(db: sqlite3.Connection, detector: Detector) -> Callable[[list[Predicted]], None]:
    """An `on_batch` that records each batch's results in the index, under the model's
    version."""
    def record_batch(results: list[Predicted]) -> None:
        predictions.record(db, detector.version,
                           [(r.key, found_boxes(r, detector.names)) for r in results],
                           time.time())
    return record_batch
