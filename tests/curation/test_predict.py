"""`predict`'s logic on real onnxruntime with small detectors that look at the pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from lyoncam_daemon.curation.predict import (
    Detection,
    Detector,
    Layout,
    ModelError,
    letterbox_geometry,
    load_frame,
    names_of_metadata,
    nms,
    read_layout,
    yolo_lines,
)
from lyoncam_daemon.labelstudio.push import read_boxes
from tests._onnx import build

RED, BLUE = (255, 0, 0), (0, 0, 255)
Box4 = tuple[float, float, float, float]


def frame(path: Path, size: tuple[int, int], squares: list[tuple[Box4, tuple[int, int, int]]]
          ) -> Path:
    """A black JPEG frame with coloured rectangles (frame pixels, corners)."""
    im = Image.new("RGB", size, (0, 0, 0))
    draw = ImageDraw.Draw(im)
    for (x0, y0, x1, y1), colour in squares:
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=colour)
    im.save(path, "JPEG", quality=95)
    return path


def iou(a: Box4, b: Box4) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def corners(d: Detection) -> Box4:
    return (d.x0, d.y0, d.x1, d.y1)


# Frames and where their squares land for a 96 x 64 (w x h) input: 16 input pixels are 50
# frame pixels (scale 0.32) in both; the landscape frame is padded 8 px top and bottom, the
# portrait one 32 px left and right. Every square sits on the model's 4 px stride.
LANDSCAPE = ((300, 150), [((100.0, 50.0, 150.0, 100.0), RED), ((200.0, 75.0, 250.0, 125.0), BLUE)])
PORTRAIT = ((100, 200), [((50.0, 50.0, 100.0, 100.0), RED), ((0.0, 125.0, 50.0, 175.0), BLUE)])


@pytest.mark.parametrize("layout", ["v8", "v5"])
@pytest.mark.parametrize("batch", [None, 1])
@pytest.mark.parametrize("scene", [LANDSCAPE, PORTRAIT], ids=["landscape", "portrait"])
def test_finds_each_square_where_it_is(tmp_path: Path, layout: str, batch: int | None,
                                       scene: tuple[tuple[int, int], list[tuple[Box4, tuple[
                                           int, int, int]]]]) -> None:
    size, squares = scene
    model = build(tmp_path / "m.onnx", layout, batch=batch)  # type: ignore[arg-type]
    det = Detector(model)
    assert (det.in_w, det.in_h) == (96, 64)  # read from the file
    assert det.layout is (Layout.V8 if layout == "v8" else Layout.V5)
    paths = [frame(tmp_path / f"f{i}.jpg", size, squares) for i in range(3)]
    loaded = [load_frame(p, det.in_w, det.in_h) for p in paths]
    found = det.detect([x for x, _ in loaded], [b for _, b in loaded], conf=0.6, iou=0.5)
    assert len(found) == 3
    for dets in found:
        # One box per square: the weaker overlapping windows around each are suppressed.
        assert sorted(d.class_id for d in dets) == [0, 1], dets
        for d in dets:
            want = squares[d.class_id][0]
            assert iou(corners(d), want) > 0.8, (d, want)
            assert d.score > 0.85


def test_without_nms_the_overlapping_windows_remain(tmp_path: Path) -> None:
    """The test above can fail: with suppression off, the same frame gives many boxes."""
    det = Detector(build(tmp_path / "m.onnx", "v8"))
    x, box = load_frame(frame(tmp_path / "f.jpg", *LANDSCAPE), det.in_w, det.in_h)
    (dets,) = det.detect([x], [box], conf=0.6, iou=1.0)
    assert len(dets) > 2


def test_batches_larger_than_a_fixed_batch_run_in_turn(tmp_path: Path) -> None:
    det = Detector(build(tmp_path / "m.onnx", "v5", batch=1))
    assert det.batch_size(8) == 1
    x, box = load_frame(frame(tmp_path / "f.jpg", *PORTRAIT), det.in_w, det.in_h)
    found = det.detect([x] * 5, [box] * 5, conf=0.6, iou=0.5)
    assert [len(d) for d in found] == [2] * 5


def test_a_model_of_neither_layout_is_one_line_naming_the_shapes(tmp_path: Path) -> None:
    model = build(tmp_path / "odd.onnx", "bad")
    with pytest.raises(ModelError) as err:
        Detector(model)
    message = str(err.value)
    assert "\n" not in message
    assert "odd.onnx" in message and "[batch, 6, 273, 1]" in message
    assert "[batch, 4 + classes, N]" in message and "[batch, N, 5 + classes]" in message


def test_not_a_model_is_one_line(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.onnx"
    bogus.write_text("not a model")
    with pytest.raises(ModelError) as err:
        Detector(bogus)
    assert str(err.value).startswith(f"{bogus}: not a model onnxruntime can load")
    assert "\n" not in str(err.value)


def test_names_come_from_the_model_or_must_match_its_classes(tmp_path: Path) -> None:
    model = build(tmp_path / "m.onnx", "v8", names=["Car", "Bus"])
    assert Detector(model).names == ["Car", "Bus"]
    assert Detector(model, names=["a", "b"]).names == ["a", "b"]
    with pytest.raises(ModelError, match="has 2 classes but 3 class names"):
        Detector(model, names=["a", "b", "c"])
    assert names_of_metadata({"names": "{0: 'person', 1: 'bicycle'}"}) == ["person", "bicycle"]
    assert names_of_metadata({"names": "__import__('os')"}) is None


def test_version_names_the_file_and_its_hash(tmp_path: Path) -> None:
    det = Detector(build(tmp_path / "detector.onnx", "v8"))
    assert det.version == f"detector.onnx@{det.sha256[:12]}"
    assert len(det.sha256) == 64


@pytest.mark.parametrize(("shape", "layout", "nc"), [
    ([1, 84, 8400], Layout.V8, 80),
    (["batch", 84, "anchors"], Layout.V8, 80),
    ([1, 25200, 85], Layout.V5, 80),
    (["batch", "anchors", 85], Layout.V5, 80),
    ([1, 5, 8400], Layout.V8, 1),
    ([1, 8400, 6], Layout.V5, 1),
])
def test_layouts_are_told_apart_by_where_the_channels_are(shape: list[int | str],
                                                          layout: Layout, nc: int) -> None:
    assert read_layout(shape) == (layout, nc)


@pytest.mark.parametrize("shape", [[1, 6, 6], [1, 4, 8400], [1, 8400], [1, 84, 8400, 1]])
def test_other_shapes_are_refused(shape: list[int]) -> None:
    with pytest.raises(ModelError, match="is neither"):
        read_layout(shape)


def test_letterbox_centres_the_frame() -> None:
    box = letterbox_geometry(1920, 1080, 640, 640)
    assert (box.scaled_w, box.scaled_h, box.left, box.top) == (640, 360, 0, 140)
    box = letterbox_geometry(1080, 1920, 640, 640)
    assert (box.scaled_w, box.scaled_h, box.left, box.top) == (360, 640, 140, 0)


def test_nms_keeps_the_best_of_overlapping_boxes_per_class() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [20, 20, 30, 30]],
                     np.float32)
    scores = np.array([0.8, 0.9, 0.7, 0.5], np.float32)
    classes = np.array([0, 0, 1, 0], np.int64)
    # Box 0 overlaps the better box 1 of its class (IoU 0.82): gone. Box 2 is another class.
    assert nms(boxes, scores, classes, iou=0.5) == [1, 2, 3]
    assert nms(boxes, scores, classes, iou=0.9) == [1, 0, 2, 3]
    assert nms(boxes, scores, classes, iou=0.5, max_det=2) == [1, 2]


def test_label_lines_are_what_push_reads(tmp_path: Path) -> None:
    found = [Detection(1, 100, 50, 150, 100, 0.87654), Detection(0, 0, 0, 300, 150, 0.5)]
    path = tmp_path / "f.txt"
    path.write_text(yolo_lines(found, 300, 150))
    boxes = read_boxes(path)
    assert [(b.class_id, b.score) for b in boxes] == [(1, 0.8765), (0, 0.5)]
    assert boxes[0].cx == pytest.approx(125 / 300) and boxes[0].h == pytest.approx(50 / 150)
    assert yolo_lines([], 300, 150) == ""
