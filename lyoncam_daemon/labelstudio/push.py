"""`push`: frames of the data directory → Label Studio tasks, with optional box predictions.

Per batch of at most `batch` frames (Label Studio takes 100 files a request by default):

1. the frames are recorded as *pending* in the index's `pushed` table;
2. their bytes are uploaded without creating tasks (`import?commit_to_project=false`);
3. the stored paths of those uploads are read back (`file-uploads?ids=`);
4. one JSON import creates the tasks, whose data carries `image`, `camera`, `captured_at`,
   `daypart`, `weather` and `lyoncam_key`, with their predictions;
5. the task ids are recorded: the frames are pushed.

A crash between 1 and 5 leaves pending rows: the next run looks for tasks carrying those
keys (`lyoncam_key`) in the project, records the ones it finds and pushes the others again,
so a frame is never pushed twice and never lost (an upload of step 2 with no task is only an
orphan file on the server).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import sqlite3
import stat
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import aiohttp
import yaml

from lyoncam_daemon.arguments import EXIT_FAILED, EXIT_OK, EXIT_USAGE, say
from lyoncam_daemon.curation.commands import data_dir_of, load_detector, open_index
from lyoncam_daemon.curation.dataset import sample, sidecar_fingerprints
from lyoncam_daemon.curation.index import connect, index_path
from lyoncam_daemon.curation.predict import (
    Detector,
    ModelError,
    Predicted,
    predict_frames,
    recorder,
)
from lyoncam_daemon.curation.predictions import canonical
from lyoncam_daemon.labelstudio.auth import AuthError, Credentials, load_token
from lyoncam_daemon.labelstudio.client import (
    HTTPError,
    LabelStudioClient,
    Unreachable,
    display_base,
)
from lyoncam_daemon.labelstudio.pull.command import shown_argument, url_problem
from lyoncam_daemon.observe.logs import configure_logging

DEFAULT_LABELS = ("Car", "Truck", "Bus", "Motorbike", "Scooter", "Bicycle", "Pedestrian")
MODEL_VERSION = "lyoncam-push"
BATCH = 100


class PushError(Exception):
    """The push cannot go on; the message is one line naming the culprit."""


def default_label_config(labels: Sequence[str] = DEFAULT_LABELS) -> str:
    choices = "".join(f'<Label value="{name}"/>' for name in labels)
    return ('<View><Image name="image" value="$image"/>'
            f'<RectangleLabels name="label" toName="image">{choices}</RectangleLabels></View>')


@dataclass(frozen=True)
class Target:
    """Where boxes go in the project's labelling interface."""

    from_name: str
    to_name: str
    labels: tuple[str, ...]


def target_of(label_config: str) -> Target:
    """The first RectangleLabels of a label config; PushError if it has none."""
    try:
        root = ElementTree.fromstring(label_config)
    except ElementTree.ParseError as exc:
        raise PushError(f"the project's label config is not XML: {exc}") from None
    for tag in root.iter():
        if tag.tag.lower() == "rectanglelabels" and tag.get("name") and tag.get("toName"):
            labels = tuple(lab.get("value", "") for lab in tag if lab.tag.lower() == "label")
            return Target(tag.get("name", ""), tag.get("toName", ""), labels)
    raise PushError("the project's label config has no RectangleLabels for boxes")


# --- predictions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    class_id: int
    cx: float
    cy: float
    w: float
    h: float
    score: float | None


def read_boxes(path: Path) -> list[Box]:
    """A YOLO label file: `class cx cy w h [score]` per line (normalised); ValueError naming
    the line otherwise."""
    boxes = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) not in (5, 6):
                raise ValueError
            cx, cy, w, h = (float(p) for p in parts[1:5])
            score = float(parts[5]) if len(parts) == 6 else None
            box = Box(int(parts[0]), cx, cy, w, h, score)
        except ValueError:
            raise ValueError(f"{path}:{n}: not `class cx cy w h [score]`") from None
        boxes.append(box)
    return boxes


def class_names(folder: Path) -> list[str] | None:
    """Class names in id order from `classes.txt` or `data.yaml` (as `pull` writes them)."""
    classes = folder / "classes.txt"
    if classes.is_file():
        return [line.strip() for line in classes.read_text().splitlines() if line.strip()]
    data = folder / "data.yaml"
    if data.is_file():
        names = (yaml.safe_load(data.read_text()) or {}).get("names")
        if isinstance(names, dict):
            return [str(names[k]) for k in sorted(names)]
        if isinstance(names, list):
            return [str(n) for n in names]
    return None


def match_label(name: str, labels: Sequence[str]) -> str | None:
    """The project's label for a class name: the same name, else the one label that is the
    same class spelt otherwise (`car` → `Car`, `person` → `Pedestrian`, `motorcycle` →
    `Motorbike`); None when the project has no such label."""
    if name in labels:
        return name
    same = [label for label in labels if canonical(label) == canonical(name)]
    return same[0] if len(same) == 1 else None


def result_id(version: str, key: str, n: int) -> str:
    """A region id unique per result, the same on every run (Label Studio's are 10 chars)."""
    return hashlib.sha256(f"{version}/{key}/{n}".encode()).hexdigest()[:10]


def to_prediction(boxes: Sequence[Box], names: Sequence[str] | None, target: Target,
                  width: int | None, height: int | None, version: str, key: str,
                  left_out: Counter[str]) -> dict[str, Any] | None:
    """One frame's boxes as a Label Studio prediction (percent of the image, top-left
    corner); boxes of a class the project lacks are counted in `left_out` by name. None
    when no box is left."""
    names = names if names is not None else list(target.labels)
    results: list[dict[str, Any]] = []
    scores: list[float] = []
    for box in boxes:
        name = names[box.class_id] if 0 <= box.class_id < len(names) else None
        label = match_label(name, target.labels) if name is not None else None
        if label is None:
            left_out[name if name is not None else f"class id {box.class_id}"] += 1
            continue
        result: dict[str, Any] = {
            "id": result_id(version, key, len(results)),
            "type": "rectanglelabels", "from_name": target.from_name, "to_name": target.to_name,
            "image_rotation": 0,
            "value": {"x": (box.cx - box.w / 2) * 100, "y": (box.cy - box.h / 2) * 100,
                      "width": box.w * 100, "height": box.h * 100, "rotation": 0,
                      "rectanglelabels": [label]},
        }
        if width and height:
            result["original_width"], result["original_height"] = width, height
        if box.score is not None:
            result["score"] = box.score
            scores.append(box.score)
        results.append(result)
    if not results:
        return None
    prediction: dict[str, Any] = {"model_version": version, "result": results}
    if scores:
        # The root score is what Label Studio sorts the task list by.
        prediction["score"] = sum(scores) / len(scores)
    return prediction


@dataclass
class Predictions:
    """Predictions from YOLO label files of a folder (one per frame stem, `--predictions`)."""

    folder: Path
    names: list[str] | None
    version: str = MODEL_VERSION

    def boxes(self, frames: Sequence[PushFrame], problems: list[str]) -> dict[str, list[Box]]:
        """The boxes of the frames that have a label file, by key; bad files to `problems`."""
        found: dict[str, list[Box]] = {}
        for f in frames:
            path = self.folder / f"{f.stem}.txt"
            if not path.is_file():
                path = self.folder / "labels" / f"{f.stem}.txt"
                if not path.is_file():
                    continue
            try:
                found[f.key] = read_boxes(path)
            except (OSError, ValueError) as exc:
                problems.append(str(exc))
        return found


class ModelPredictions:
    """Predictions made now by the user's detector (`--model`), recorded in the index too."""

    def __init__(self, detector: Detector, data_dir: Path, conf: float, iou: float,
                 batch: int = 8) -> None:
        self.detector, self.data_dir = detector, data_dir
        self.conf, self.iou, self.batch = conf, iou, batch
        self.names = detector.names
        self.version = detector.version

    def boxes(self, frames: Sequence[PushFrame], problems: list[str]) -> dict[str, list[Box]]:
        """Runs in a worker thread, with its own index connection (sqlite3 connections
        belong to their thread)."""
        kept: list[Predicted] = []
        db = connect(index_path(self.data_dir))
        try:
            record = recorder(db, self.detector)

            def keep(results: list[Predicted]) -> None:
                record(results)
                kept.extend(results)

            done = predict_frames(self.detector, [(f.key, self.data_dir / f.key) for f in frames],
                                  self.conf, self.iou, self.batch, keep)
        finally:
            db.close()
        problems.extend(f"cannot predict {self.data_dir / k}: {why}" for k, why in done.failed)
        return {r.key: [Box(d.class_id, (d.x0 + d.x1) / 2 / r.width, (d.y0 + d.y1) / 2 / r.height,
                            (d.x1 - d.x0) / r.width, (d.y1 - d.y0) / r.height, d.score)
                        for d in r.found] for r in kept}


PredictionSource = Predictions | ModelPredictions


# --- what was pushed -----------------------------------------------------------------------


@dataclass(frozen=True)
class PushFrame:
    key: str
    camera: str
    captured_at: str
    daypart: str | None
    weather: str | None
    width: int | None
    height: int | None

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def stem(self) -> str:
        return self.name.rsplit(".", 1)[0]


def frames_of(db: sqlite3.Connection, keys: Sequence[str]) -> tuple[list[PushFrame], list[str]]:
    """The index rows of `keys`, in order, and the keys the index does not have."""
    found, missing = [], []
    for key in keys:
        row = db.execute("SELECT key, camera, captured_at, daypart, weather, width, height "
                         "FROM frames WHERE key = ?", (key,)).fetchone()
        if row is None:
            missing.append(key)
        else:
            found.append(PushFrame(*row))
    return found, missing


def readable(data_dir: Path, frames: Sequence[PushFrame]
             ) -> tuple[list[PushFrame], list[str], list[str]]:
    """Before anything is created on the server: the frames whose JPEG is a regular file that
    opens, the keys of frames gone from disk, and one line for each that cannot be read.
    Blocking."""
    ok: list[PushFrame] = []
    gone: list[str] = []
    problems: list[str] = []
    for f in frames:
        path = data_dir / f.key
        try:
            # Non-blocking: a FIFO put in a frame's place must not hang the push.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            gone.append(f.key)
            continue
        except OSError as exc:
            problems.append(f"cannot read {path}: {exc.strerror or exc}")
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                problems.append(f"cannot read {path}: not a regular file")
                continue
        finally:
            os.close(fd)
        ok.append(f)
    return ok, gone, problems


class Ledger:
    """The index's `pushed` table for one server and project: pending, then task id."""

    def __init__(self, db: sqlite3.Connection, server: str, project: int) -> None:
        self.db, self.server, self.project = db, server, project

    def pushed(self) -> set[str]:
        return {k for (k,) in self.db.execute(
            "SELECT key FROM pushed WHERE server = ? AND project = ? AND task_id IS NOT NULL",
            (self.server, self.project))}

    def pending(self) -> set[str]:
        return {k for (k,) in self.db.execute(
            "SELECT key FROM pushed WHERE server = ? AND project = ? AND task_id IS NULL",
            (self.server, self.project))}

    def mark_pending(self, keys: Sequence[str]) -> None:
        self._write("INSERT OR REPLACE INTO pushed VALUES (?, ?, ?, NULL, ?)",
                    [(k, self.server, self.project, time.time()) for k in keys])

    def confirm(self, tasks: Mapping[str, int]) -> None:
        self._write("UPDATE pushed SET task_id = ?, pushed_at = ? WHERE key = ? AND server = ? "
                    "AND project = ?",
                    [(t, time.time(), k, self.server, self.project) for k, t in tasks.items()])

    def forget(self, keys: Sequence[str]) -> None:
        self._write("DELETE FROM pushed WHERE key = ? AND server = ? AND project = ?",
                    [(k, self.server, self.project) for k in keys])

    def _write(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """One transaction (the index connection is in autocommit mode), durable on return."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(sql, rows)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")


# --- the push ------------------------------------------------------------------------------


@dataclass
class Pushed:
    pushed: int = 0
    already: int = 0
    recovered: int = 0
    predictions: int = 0
    problems: list[str] = field(default_factory=list)
    #: Boxes of classes the project has no label for, by class name.
    left_out: Counter[str] = field(default_factory=Counter)

    def warnings(self) -> list[str]:
        return [*self.problems, *(
            f"{name!r} is not a label of the project: {n} box{'es' if n > 1 else ''} left out"
            for name, n in sorted(self.left_out.items()))]


def _json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise PushError(f"{what}: the answer is not JSON") from None


class Pusher:
    def __init__(self, client: LabelStudioClient, project: int, data_dir: Path, ledger: Ledger,
                 predictions: PredictionSource | None = None, batch: int = BATCH,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self.client, self.project, self.data_dir = client, project, data_dir
        self.ledger, self.predictions, self.batch = ledger, predictions, batch
        self.progress = progress
        self.done = Pushed()

    async def run(self, frames: Sequence[PushFrame]) -> Pushed:
        project = await self.client.get_project(self.project)
        target = target_of(str(project.get("label_config") or ""))
        await self._recover()
        already = self.ledger.pushed()
        todo = [f for f in frames if f.key not in already]
        self.done.already = len(frames) - len(todo)
        for start in range(0, len(todo), self.batch):
            await self._batch(todo[start:start + self.batch], target)
            if self.progress is not None:
                self.progress(min(start + self.batch, len(todo)), len(todo))
        return self.done

    async def _recover(self) -> None:
        """Pending frames of an interrupted run: pushed if the project has their task."""
        pending = self.ledger.pending()
        if not pending:
            return
        found: dict[str, int] = {}
        async for task in self.client.iter_tasks(self.project):
            data = task.get("data")
            key = data.get("lyoncam_key") if isinstance(data, dict) else None
            if key in pending and isinstance(task.get("id"), int):
                found[key] = task["id"]
        self.ledger.confirm(found)
        self.ledger.forget([k for k in pending if k not in found])
        self.done.recovered = len(found)

    async def _batch(self, frames: Sequence[PushFrame], target: Target) -> None:
        blobs = await asyncio.to_thread(self._read, frames)
        boxes: dict[str, list[Box]] = {}
        if self.predictions is not None:
            boxes = await asyncio.to_thread(self.predictions.boxes, frames, self.done.problems)
        self.ledger.mark_pending([f.key for f in frames])
        paths = await self._upload(frames, blobs)
        tasks = []
        for f in frames:
            data = {"image": f"/data/{paths[f.name]}", "camera": f.camera,
                    "captured_at": f.captured_at, "daypart": f.daypart, "weather": f.weather,
                    "lyoncam_key": f.key}
            task: dict[str, Any] = {"data": data}
            if self.predictions is not None and f.key in boxes:
                p = to_prediction(boxes[f.key], self.predictions.names, target, f.width,
                                  f.height, self.predictions.version, f.key, self.done.left_out)
                if p is not None:
                    task["predictions"] = [p]
                    self.done.predictions += 1
            tasks.append(task)
        path = f"/api/projects/{self.project}/import"
        resp = await self.client.request("POST", path, params={"return_task_ids": "true"},
                                         json=tasks)
        if resp.status not in (200, 201):
            raise HTTPError(resp.status, "POST", self.client.url(path), f"HTTP {resp.status}")
        ids = _json(resp.body, f"POST {path}").get("task_ids")
        if not isinstance(ids, list) or len(ids) != len(frames):
            raise PushError(f"POST {path}: expected {len(frames)} task ids, got {ids!r}")
        self.ledger.confirm({f.key: int(i) for f, i in zip(frames, ids, strict=True)})
        self.done.pushed += len(frames)

    def _read(self, frames: Sequence[PushFrame]) -> list[bytes]:
        blobs = []
        for f in frames:
            try:
                blobs.append((self.data_dir / f.key).read_bytes())
            except OSError as exc:
                raise PushError(f"cannot read {self.data_dir / f.key}: "
                                f"{exc.strerror or exc}") from None
        return blobs

    async def _upload(self, frames: Sequence[PushFrame], blobs: Sequence[bytes]) -> dict[str, str]:
        """Upload the files without creating tasks; their stored paths by file name."""
        def form() -> aiohttp.FormData:
            body = aiohttp.FormData()
            for i, (f, blob) in enumerate(zip(frames, blobs, strict=True)):
                body.add_field(f"file{i}", blob, filename=f.name, content_type="image/jpeg")
            return body

        path = f"/api/projects/{self.project}/import"
        resp = await self.client.request("POST", path, params={"commit_to_project": "false"},
                                         form=form)
        if resp.status not in (200, 201):
            raise HTTPError(resp.status, "POST", self.client.url(path), f"HTTP {resp.status}")
        ids = _json(resp.body, f"POST {path}").get("file_upload_ids")
        if not isinstance(ids, list) or len(ids) != len(frames):
            raise PushError(f"POST {path}: expected {len(frames)} file uploads, got {ids!r}")
        listing = await self.client.get_json(
            f"/api/projects/{self.project}/file-uploads",
            params={"ids": json.dumps(ids, separators=(",", ":"))})
        paths: dict[str, str] = {}
        for upload in listing if isinstance(listing, list) else []:
            stored = upload.get("file") if isinstance(upload, dict) else None
            if isinstance(stored, str):
                # `upload/<pid>/<8 hex>-<name>`: the name the frame was sent under.
                paths[re.sub(r"^[0-9a-f]+-", "", stored.rsplit("/", 1)[-1])] = stored
        missing = [f.name for f in frames if f.name not in paths]
        if missing:
            raise PushError(f"the server did not list the uploads of {', '.join(missing[:3])}")
        return paths


# --- the command ----------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    """The `push` command (arguments in commands.py)."""

    problem = url_problem(args.url.strip())
    if problem is not None:
        say(f"error: --url {shown_argument(args.url)!r}: {problem}")
        return EXIT_USAGE
    configure_logging(args.log_format, "info")
    try:
        credentials = Credentials(load_token(token_file=args.token_file))
    except AuthError as exc:
        say(f"error: {exc}")
        return EXIT_USAGE
    data_dir = data_dir_of(args)
    if data_dir is None:
        return EXIT_USAGE
    args.detector = None
    if args.model is not None:
        args.detector = load_detector(args.model, args.names, "--model")
        if args.detector is None:
            return EXIT_USAGE
    db = open_index(data_dir)
    if db is None:
        return EXIT_FAILED
    with contextlib.closing(db):
        try:
            return asyncio.run(_push_command(args, data_dir, db, credentials))
        except (AuthError, PushError, HTTPError, Unreachable, ModelError) as exc:
            say(f"error: {exc}")
            return EXIT_FAILED


async def _push_command(args: argparse.Namespace, data_dir: Path, db: Any, credentials: Any) -> int:
    if args.sample is not None:
        try:
            keys = [f["key"] for f in json.loads(args.sample.read_text())["frames"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PushError(f"{args.sample}: not a sample file ({exc})") from None
    else:
        keys = [c.key for c in sample(db, args.n, sidecar_fingerprints(data_dir))]
    frames, missing = frames_of(db, keys)
    for key in missing:
        say(f"warning: {key} is not in the index of {data_dir}: skipped")
    # Every file is looked at before anything is created on the server (a project, uploads).
    frames, gone, unreadable = await asyncio.to_thread(readable, data_dir, frames)
    for key in gone:
        say(f"warning: {key} is gone from {data_dir}: skipped")
    if unreadable:
        more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
        raise PushError(f"{unreadable[0]}{more}; nothing was sent")
    if not frames:
        raise PushError(f"no frame to push: none of the {len(keys)} chosen is on disk")
    predictions: PredictionSource | None = None
    if args.predictions is not None:
        if not args.predictions.is_dir():
            raise PushError(f"--predictions {args.predictions}: not a folder")
        predictions = Predictions(args.predictions, class_names(args.predictions))
    elif args.model is not None:
        predictions = ModelPredictions(args.detector, data_dir, args.conf, args.iou)
    async with LabelStudioClient(args.url.strip(), credentials,
                                 rate=args.rate or None) as client:
        project = args.project
        if args.create is not None:
            resp = await client.request("POST", "/api/projects", json={
                "title": args.create, "label_config": default_label_config()})
            if resp.status != 201:
                raise PushError(f"cannot create project {args.create!r}: HTTP {resp.status}")
            project = int(json.loads(resp.body)["id"])
            say(f"created project {project} {args.create!r}")
        ledger = Ledger(db, display_base(client.base_url), project)
        pusher = Pusher(client, project, data_dir, ledger, predictions, args.batch,
                        progress=lambda done, total: say(f"pushed {done}/{total}"))
        done = await pusher.run(frames)
    for problem in done.warnings():
        say(f"warning: {problem}")
    print(f"project {project}: {done.pushed} frames pushed ({done.predictions} with "
          f"predictions), {done.already} already there"
          f"{f', {done.recovered} found from an interrupted run' if done.recovered else ''}")
    return EXIT_OK
