"""`compare A.jpg B.jpg`: the judge's decision on B right after A was stored, explained.

The same code path as the daemon (`Judge.decide_now`): A is judged as a camera's first
frame and remembered as the camera remembers a stored frame (its fingerprint, its cells),
then B is judged against it, with the camera's mask and threshold when `--config` and
`--camera` are given. The camera's learned noise is not in the files: it is taken from A's
sidecar (``A.json``, written by the daemon) when there is one, else the camera is fresh
(as after its first stored frame). The PNG draws B with every cell over the threshold
outlined in red and the highest-scoring cell in yellow.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from lyoncam_daemon.config import CameraConfig, Config, DedupSettings
from lyoncam_daemon.frames.change import cell_box, cell_scores
from lyoncam_daemon.frames.fingerprint import decode_gray, working_size
from lyoncam_daemon.frames.jpeg import KNOWN_PLACEHOLDER_SHA256
from lyoncam_daemon.frames.judge import Judge, LastFrame, Outcome, Verdict

#: The camera `compare` judges for when no config names one: every default.
_DEFAULT_CAMERA = CameraConfig(id="compare", url="http://127.0.0.1/compare.jpg")


class CompareError(ValueError):
    """A file or camera `compare` cannot use; the message names it."""


@dataclass(frozen=True)
class Compared:
    first: Verdict  # A, judged as the camera's first frame
    verdict: Verdict  # B, judged against A
    last: LastFrame  # what the camera remembered of A


def sidecar_noise(frame: Path) -> float | None:
    """The camera's noise as the daemon wrote it beside `frame` (None without a sidecar)."""
    side = frame.with_suffix(".json")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, Mapping):
        return None
    remembered = LastFrame.from_sidecar({**meta, "sha256": "0" * 64})
    return remembered.noise if remembered is not None else None


def compare_pair(settings: DedupSettings, camera: CameraConfig, placeholders: frozenset[str],
                 a: bytes, b: bytes, noise: float | None = None) -> Compared:
    """B judged right after A was stored, as the daemon's camera task does it."""
    with ThreadPoolExecutor(1) as pool:
        judge = Judge(settings, placeholders, pool, cameras=[camera])
        state = judge.camera_state(camera)
        first = judge.decide_now(a, None, state)
        if first.outcome is not Outcome.STORED:
            raise CompareError(f"the first image would not be stored ({first.outcome.value}"
                               f"{': ' + first.reason if first.reason else ''})")
        stored_at = 0.0  # B is judged right after: no heartbeat due
        last = LastFrame(first.sha256, first.fingerprint, first.reference, stored_at, noise)
        return Compared(first, judge.decide_now(b, last, state, now=stored_at), last)


def lines(c: Compared) -> list[str]:
    """The decision in words, with its numbers."""
    v, d = c.verdict, c.verdict.decision
    head = v.outcome.value
    if d is not None and d.reason is not None:
        head += f" ({d.reason.value})"
    out = [f"decision: {head}"]
    if v.reason:
        out.append(f"why: {v.reason}")
    if d is not None:
        if d.tile_score is not None and d.tile_box is not None:
            x, y, w, h = d.tile_box
            out.append(f"tile score: {d.tile_score:g} (threshold {d.tile_threshold:g}) at "
                       f"x={x} y={y} w={w} h={h}")
        out.append(f"fingerprint distance: {d.distance} (threshold {d.distance_threshold})")
        out.append(f"camera noise: {d.noise if d.noise is not None else 'not learnt yet'}")
    return out


def as_json(c: Compared) -> dict[str, Any]:
    d = c.verdict.decision
    return {"outcome": c.verdict.outcome.value, "change": d.to_json() if d else None}


def draw(b: bytes, c: Compared, settings: DedupSettings, out: Path) -> None:
    """B with its changed cells outlined: red over the threshold, yellow the highest."""
    d = c.verdict.decision
    ref = c.last.reference
    with Image.open(io.BytesIO(b)) as im:
        canvas = im.convert("RGB")
    pen = ImageDraw.Draw(canvas)
    if ref is not None and d is not None and d.tile_threshold is not None:
        pixels, _ = decode_gray(b, working_size(settings.hash, settings.hash_size))
        grid = cell_scores(ref, pixels)
        if grid is not None:
            for row, col in zip(*np.nonzero(np.nan_to_num(grid) > d.tile_threshold),
                                strict=True):
                x, y, w, h = cell_box(ref, int(row), int(col))
                pen.rectangle((x, y, x + w - 1, y + h - 1), outline=(255, 0, 0), width=2)
    if d is not None and d.tile_box is not None:
        x, y, w, h = d.tile_box
        pen.rectangle((x - 3, y - 3, x + w + 2, y + h + 2), outline=(255, 230, 0), width=3)
    try:
        canvas.save(out, "PNG")
    except OSError as exc:
        raise CompareError(f"cannot write {out}: {exc.strerror or exc}") from None


def read_frame(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CompareError(f"cannot read {path}: {exc.strerror or exc}") from None


def camera_of(config: Config, camera_id: str | None) -> CameraConfig:
    if camera_id is None:
        if len(config.cameras) == 1:
            return config.cameras[0]
        raise CompareError("the config has several cameras: name one with --camera ID")
    for camera in config.cameras:
        if camera.id == camera_id:
            return camera
    raise CompareError(f"no camera {camera_id!r} in the config")


def run(a_path: Path, b_path: Path, config: Config | None, camera_id: str | None,
        png: Path | None, as_json_out: bool) -> int:
    """The command's work; CompareError for anything it cannot use."""
    if config is None:
        if camera_id is not None:
            raise CompareError("--camera needs --config")
        settings, camera, extra = DedupSettings(), _DEFAULT_CAMERA, frozenset[str]()
    else:
        settings, camera = config.dedup, camera_of(config, camera_id)
        extra = frozenset(config.placeholder_sha256)
    a, b = read_frame(a_path), read_frame(b_path)
    result = compare_pair(settings, camera, KNOWN_PLACEHOLDER_SHA256 | extra, a, b,
                          sidecar_noise(a_path))
    if as_json_out:
        print(json.dumps(as_json(result), sort_keys=True))
    else:
        for line in lines(result):
            print(line)
    if png is not None:
        draw(b, result, settings, png)
        print(f"drawn: {png}", file=sys.stderr)
    return 0 if result.verdict.outcome in (Outcome.STORED, Outcome.NEAR_DUPLICATE,
                                           Outcome.UNCHANGED) else 1
