"""Small real ONNX detectors built with `onnx.helper`, for `predict` and `push --model` tests.

No detector weights install on these machines, so the tests make their own. Each graph
looks at the pixels: it averages every colour channel over windows of WINDOW x WINDOW input
pixels every STRIDE pixels (AveragePool) and emits, per window, a box exactly covering it
and one score per class: class 0 is the window's mean red minus its mean green, class 1 its
mean blue minus its mean green (so the grey letterbox padding and black score 0). A pure red
square of WINDOW input pixels aligned on the stride is therefore found as one class-0 box
with score 1.0, surrounded by overlapping weaker windows (0.75 one stride away, IoU 0.6 with
it) that only NMS removes; a letterbox or mapping error moves or loses the box.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image, ImageDraw

from lyoncam_daemon.storage import Frame
from lyoncam_daemon.storage.filesystem import FilesystemStorage
from tests._curation import T0, Spec, sidecar

WINDOW = 16
STRIDE = 4
OPSET = 17

ModelLayout = Literal["v8", "v5", "bad"]


def grid(in_h: int, in_w: int) -> tuple[int, int]:
    return (in_h - WINDOW) // STRIDE + 1, (in_w - WINDOW) // STRIDE + 1


def window_boxes(in_h: int, in_w: int) -> np.ndarray:
    """cx, cy, w, h of every window, [4, G] in the order AveragePool lays them out."""
    gh, gw = grid(in_h, in_w)
    ys, xs = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    cx = (xs.ravel() * STRIDE + WINDOW / 2).astype(np.float32)
    cy = (ys.ravel() * STRIDE + WINDOW / 2).astype(np.float32)
    size = np.full_like(cx, WINDOW)
    return np.stack([cx, cy, size, size])


def build(path: Path, layout: ModelLayout, *, in_h: int = 64, in_w: int = 96,
          batch: int | None = None, names: Sequence[str] | None = None) -> Path:
    """Write the detector to `path`: output `[B, 6, G]` (v8), `[B, G, 7]` (v5, objectness =
    the best class score, class probabilities = scores / objectness) or `[B, 6, G, 1]`
    (bad). `batch` None leaves the batch open; `names` go in the metadata as ultralytics
    writes them."""
    gh, gw = grid(in_h, in_w)
    g = gh * gw
    b: int | str = batch if batch is not None else "batch"
    inits = [
        numpy_helper.from_array(window_boxes(in_h, in_w)[None], "anchors"),  # [1, 4, G]
        numpy_helper.from_array(np.array([0, 3, -1], np.int64), "flat"),
        numpy_helper.from_array(np.array([0, 2], np.int64), "red_blue"),
        numpy_helper.from_array(np.array([1, 1], np.int64), "green2"),
        numpy_helper.from_array(np.array([0, 0, 0, 0], np.int64), "four"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(1e-6, np.float32), "eps"),
        numpy_helper.from_array(np.array([3], np.int64), "last"),
    ]
    nodes = [
        helper.make_node("AveragePool", ["images"], ["pooled"], kernel_shape=[WINDOW, WINDOW],
                         strides=[STRIDE, STRIDE]),
        helper.make_node("Reshape", ["pooled", "flat"], ["means"]),            # [B, 3, G]
        helper.make_node("Gather", ["means", "red_blue"], ["rb"], axis=1),     # [B, 2, G]
        helper.make_node("Gather", ["means", "green2"], ["gg"], axis=1),
        helper.make_node("Sub", ["rb", "gg"], ["cls"]),
        helper.make_node("Gather", ["means", "four"], ["four_rows"], axis=1),  # [B, 4, G]
        helper.make_node("Mul", ["four_rows", "zero"], ["zeros4"]),
        helper.make_node("Add", ["zeros4", "anchors"], ["boxes"]),             # [B, 4, G]
    ]
    if layout == "v5":
        nodes += [
            helper.make_node("ReduceMax", ["cls"], ["obj"], axes=[1], keepdims=1),
            helper.make_node("Add", ["obj", "eps"], ["obj_eps"]),
            helper.make_node("Div", ["cls", "obj_eps"], ["prob"]),
            helper.make_node("Concat", ["boxes", "obj", "prob"], ["rows"], axis=1),
            helper.make_node("Transpose", ["rows"], ["output0"], perm=[0, 2, 1]),
        ]
        out_shape: list[int | str] = [b, g, 7]
    else:
        nodes.append(helper.make_node("Concat", ["boxes", "cls"],
                                      ["output0" if layout == "v8" else "rows"], axis=1))
        out_shape = [b, 6, g]
        if layout == "bad":
            nodes.append(helper.make_node("Unsqueeze", ["rows", "last"], ["output0"]))
            out_shape = [b, 6, g, 1]
    graph = helper.make_graph(
        nodes, f"brightest-{layout}",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [b, 3, in_h, in_w])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, out_shape)],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    if names is not None:
        helper.set_model_props(model, {"names": repr(dict(enumerate(names)))})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


# --- frames these detectors see -------------------------------------------------------


RED, BLUE = (255, 0, 0), (0, 0, 255)


def scene(reds: int, blues: int) -> bytes:
    """A 300 x 150 JPEG with 50 px squares (red at y 25, blue at y 100, every 75 px from
    x 25): on the stride of a 96 x 64 `build` model, 16 of its input pixels each."""
    im = Image.new("RGB", (300, 150), (0, 0, 0))
    draw = ImageDraw.Draw(im)
    for i in range(reds):
        draw.rectangle((25 + 75 * i, 25, 25 + 75 * i + 49, 74), fill=RED)
    for i in range(blues):
        draw.rectangle((25 + 75 * i, 100, 25 + 75 * i + 49, 149), fill=BLUE)
    out = io.BytesIO()
    im.save(out, "JPEG", quality=95)
    return out.getvalue()


def tree(data_dir: Path, plan: list[tuple[str, int, int, int]]) -> list[str]:
    """Frames (camera, minutes after T0, red squares, blue squares); their keys."""
    store = FilesystemStorage(data_dir)
    keys = []
    for n, (camera, minutes, reds, blues) in enumerate(plan):
        meta = sidecar(Spec(camera, minutes), n)
        meta.update(width=300, height=150)
        keys.append(store.write(Frame(camera, T0 + timedelta(minutes=minutes),
                                      scene(reds, blues), meta)).key)
    return keys
