"""YOLO conversion, annotation choice, class order and file-name sanitising (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from lyoncam_daemon.labelstudio.yolo import (
    annotation_boxes,
    class_list,
    latest_annotation,
    output_name,
    parse_label_config,
    parse_yolo_text,
    sanitize_stem,
    yolo_text,
)

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="Car"/><Label value="Truck"/><Label value="Bus"/>
  </RectangleLabels>
</View>"""


def rect(
    x: float, y: float, w: float, h: float, label: str = "Car", **extra: Any
) -> dict[str, Any]:
    value = {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]}
    value.update(extra)
    return {"type": "rectanglelabels", "from_name": "label", "to_name": "image",
            "original_width": 1920, "original_height": 1080, "value": value}


def test_label_config_order_and_image_key() -> None:
    config = parse_label_config(CONFIG)
    assert config.classes == ("Car", "Truck", "Bus")
    assert config.image_key == "image"


def test_label_config_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="XML"):
        parse_label_config("<View><oops")


def test_rectangle_to_yolo() -> None:
    conv = annotation_boxes({"result": [rect(10, 20, 30, 40)]})
    assert conv.problems == [] and conv.malformed == 0
    (box,) = conv.boxes
    assert (box.cx, box.cy, box.w, box.h) == pytest.approx((0.25, 0.4, 0.3, 0.4), abs=1e-12)
    assert yolo_text(conv.boxes, {"Car": 0}) == "0 0.25000000 0.40000000 0.30000000 0.40000000\n"


def test_overshoot_is_clipped_and_reported() -> None:
    conv = annotation_boxes({"result": [rect(90, -5, 20, 10)]})
    (box,) = conv.boxes
    assert (box.cx, box.cy, box.w, box.h) == pytest.approx((0.95, 0.025, 0.1, 0.05))
    assert "clipped" in conv.problems[0]


def test_rotation_is_reported_and_enclosed() -> None:
    # 90 degrees clockwise about the top-left corner (pixel space, 1920x1080):
    # a 192x108 px box at (960, 540) covers x 852..960, y 540..732.
    conv = annotation_boxes({"result": [rect(50, 50, 10, 10, rotation=90)]})
    assert conv.rotated == 1 and "rotated" in conv.problems[0]
    (box,) = conv.boxes
    assert box.cx == pytest.approx((852 + 960) / 2 / 1920)
    assert box.cy == pytest.approx((540 + 732) / 2 / 1080)
    assert box.w == pytest.approx(108 / 1920)
    assert box.h == pytest.approx(192 / 1080)
    skipped = annotation_boxes({"result": [rect(50, 50, 10, 10, rotation=90)]}, "skip")
    assert skipped.boxes == [] and skipped.rotated == 1 and "skipped" in skipped.problems[0]
    full_turn = annotation_boxes({"result": [rect(50, 50, 10, 10, rotation=360)]})
    assert full_turn.rotated == 0 and full_turn.problems == []


@pytest.mark.parametrize(
    "region",
    [
        {"type": "rectanglelabels", "value": {"x": "a", "y": 1, "width": 1, "height": 1,
                                              "rectanglelabels": ["Car"]}},
        {"type": "rectanglelabels", "value": {"x": 1, "y": 1, "width": 0, "height": 1,
                                              "rectanglelabels": ["Car"]}},
        {"type": "rectanglelabels", "value": {"x": 1, "y": 1, "width": 1, "height": 1,
                                              "rectanglelabels": []}},
        {"type": "rectanglelabels"},
        "not a dict",
    ],
)
def test_malformed_regions_are_reported_not_fatal(region: Any) -> None:
    conv = annotation_boxes({"result": [region, rect(0, 0, 50, 50)]})
    assert conv.malformed == 1 and len(conv.boxes) == 1 and conv.problems


def test_other_region_types() -> None:
    conv = annotation_boxes({"result": [{"type": "choices", "value": {}},
                                        {"type": "polygonlabels", "value": {}}]})
    assert conv.boxes == [] and conv.malformed == 0
    assert len(conv.problems) == 1 and "polygonlabels" in conv.problems[0]


def test_latest_non_cancelled_annotation() -> None:
    anns = [
        {"id": 1, "updated_at": "2025-01-01T10:00:00Z", "was_cancelled": False},
        {"id": 2, "updated_at": "2025-01-03T10:00:00Z", "was_cancelled": True},
        {"id": 3, "updated_at": "2025-01-02T10:00:00.123456Z", "was_cancelled": False},
        {"id": 4, "updated_at": "2025-01-01T09:00:00Z"},
    ]
    chosen = latest_annotation(anns)
    assert chosen is not None and chosen["id"] == 3
    assert latest_annotation([{"id": 5, "was_cancelled": True}]) is None
    assert latest_annotation([]) is None


def test_extra_classes_appended_sorted() -> None:
    classes, extras = class_list(["Car", "Bus"], ["Tram", "Car", "Bike", "Tram"])
    assert classes == ["Car", "Bus", "Bike", "Tram"] and extras == ["Bike", "Tram"]


def test_parse_yolo_text() -> None:
    lines, problems = parse_yolo_text("0 0.5 0.5 0.1 0.1\n\n7 0.5 0.5 0.1 0.1\n1 2 3\n", 3)
    assert lines == ["0 0.50000000 0.50000000 0.10000000 0.10000000"]
    assert len(problems) == 2


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd", "etc_passwd"),
        ("/etc/passwd", "etc_passwd"),
        ("..", "fb"),
        ("", "fb"),
        ("C:\\Windows\\system32", "C_Windows_system32"),
        ("Pont Clémenceau ☃", "Pont_Clemenceau"),
        ("a\x00b\nc", "a_b_c"),
        ("\uff23\uff37\uff2c\uff19\uff10\uff11\uff18", "CWL9018"),  # fullwidth
        ("CON", "fb_CON"),
        (".hidden", "hidden"),
        ("x" * 300, "x" * 120),
    ],
)
def test_sanitize_stem(raw: str, expected: str) -> None:
    stem = sanitize_stem(raw, "fb")
    assert stem == expected
    assert "/" not in stem and "\\" not in stem and not stem.startswith(".")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/data/upload/3/1a2b3c4d-CWL9018_20250101T120000Z.jpg",
         ("CWL9018_20250101T120000Z", ".jpg")),
        ("/data/upload/3/..%2F..%2Fetc%2Fpasswd", ("passwd", ".jpg")),
        ("https://h/x/../../%2e%2e/evil.PNG?sig=1", ("evil", ".png")),
        ("/storage-data/uploaded/?filepath=upload/1/deadbeef-a.jpeg", ("a", ".jpg")),
        ("/data/local-files/?d=frames%2Fb%C3%A9.jpg", ("be", ".jpg")),
        ("/data/upload/1/archive.tar.exe", ("archive.tar.exe", ".jpg")),
        ("/", ("task7", ".jpg")),
    ],
)
def test_output_name(url: str, expected: tuple[str, str]) -> None:
    assert output_name(url, "task7") == expected
