"""`push`: predictions from YOLO files, and the round trip through a real Label Studio:
push, annotate through the API, pull: the same bytes and the boxes given."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from lyoncam_daemon.cli import main
from lyoncam_daemon.curation.index import index_path
from lyoncam_daemon.labelstudio.push import (
    DEFAULT_LABELS,
    Box,
    Predictions,
    PushError,
    PushFrame,
    class_names,
    default_label_config,
    match_label,
    read_boxes,
    target_of,
    to_prediction,
)
from lyoncam_daemon.storage import Frame, StoredFrame
from lyoncam_daemon.storage.filesystem import FilesystemStorage

from .._curation import Spec, jpeg, sidecar
from .conftest import REPO, LabelStudio

FIXTURE = REPO / "tests" / "fixtures" / "CWL9018_night.jpg"
TARGET = target_of(default_label_config())


def test_default_label_config_names_the_seven_classes() -> None:
    assert TARGET.labels == DEFAULT_LABELS
    assert (TARGET.from_name, TARGET.to_name) == ("label", "image")
    with pytest.raises(PushError, match="no RectangleLabels"):
        target_of('<View><Image name="i" value="$image"/></View>')


def push_frame(stem: str, width: int | None = None, height: int | None = None) -> PushFrame:
    return PushFrame(f"X/2026/11/26/{stem}.jpg", "X", "2026-11-26T00:00:00Z", None, None,
                     width, height)


def test_yolo_predictions_become_rectangles_and_unknown_names_are_reported(
    tmp_path: Path,
) -> None:
    (tmp_path / "classes.txt").write_text("Bus\nCar\nTram\n")  # as pull writes it
    (tmp_path / "F_20261126T000000Z.txt").write_text(
        "1 0.5 0.25 0.2 0.1 0.8\n0 0.1 0.1 0.1 0.1 0.6\n2 0.5 0.5 0.1 0.1\n")
    problems: list[str] = []
    left_out: Counter[str] = Counter()
    preds = Predictions(tmp_path, class_names(tmp_path))
    frame, other = push_frame("F_20261126T000000Z"), push_frame("NO_SUCH_FRAME")
    boxes = preds.boxes([frame, other], problems)
    assert set(boxes) == {frame.key} and not problems
    p = to_prediction(boxes[frame.key], preds.names, TARGET, 1920, 1080, preds.version,
                      frame.key, left_out)
    assert p is not None and p["model_version"] == "lyoncam-push"
    car, bus = p["result"]
    assert car["value"]["rectanglelabels"] == ["Car"] and bus["value"]["rectanglelabels"] == ["Bus"]
    v = car["value"]
    assert [v["x"], v["y"], v["width"], v["height"]] == pytest.approx([40, 20, 20, 10])
    assert (car["original_width"], car["original_height"], car["score"]) == (1920, 1080, 0.8)
    assert p["score"] == pytest.approx(0.7)
    assert car["id"] != bus["id"] and len(car["id"]) == 10
    assert left_out == Counter({"Tram": 1})


def test_class_names_are_matched_to_the_project_labels() -> None:
    labels = TARGET.labels
    assert match_label("Car", labels) == "Car"
    assert match_label("car", labels) == "Car"
    assert match_label("person", labels) == "Pedestrian"
    assert match_label("motorcycle", labels) == "Motorbike"
    assert match_label("Motor_Scooter", labels) == "Scooter"
    assert match_label("traffic light", labels) is None
    left_out: Counter[str] = Counter()
    boxes = [Box(0, 0.5, 0.5, 0.1, 0.1, 0.9), Box(1, 0.5, 0.5, 0.1, 0.1, 0.4),
             Box(1, 0.2, 0.2, 0.1, 0.1, 0.3)]
    p = to_prediction(boxes, ["person", "traffic light"], TARGET, None, None, "m@1", "k",
                      left_out)
    assert p is not None and [r["value"]["rectanglelabels"] for r in p["result"]] == [
        ["Pedestrian"]]
    assert left_out == Counter({"traffic light": 2})
    assert to_prediction(boxes[1:], ["person", "traffic light"], TARGET, None, None, "m@1",
                         "k", left_out) is None


def test_class_ids_without_names_follow_the_project_and_bad_lines_are_named(
    tmp_path: Path,
) -> None:
    (tmp_path / "A_20261126T000000Z.txt").write_text("6 0.5 0.5 0.1 0.1\n9 0.5 0.5 0.1 0.1\n")
    problems: list[str] = []
    left_out: Counter[str] = Counter()
    preds = Predictions(tmp_path, class_names(tmp_path))
    frame = push_frame("A_20261126T000000Z")
    p = to_prediction(preds.boxes([frame], problems)[frame.key], preds.names, TARGET, None,
                      None, preds.version, frame.key, left_out)
    assert p is not None and p["result"][0]["value"]["rectanglelabels"] == ["Pedestrian"]
    assert left_out == Counter({"class id 9": 1})
    bad = tmp_path / "bad.txt"
    bad.write_text("0 0.5 0.5\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: not `class cx cy w h \[score\]`"):
        read_boxes(bad)
    assert preds.boxes([push_frame("bad")], problems) == {}
    assert "bad.txt:1" in problems[0]
    (tmp_path / "data.yaml").write_text("names:\n  0: Truck\n  1: Car\n")
    assert class_names(tmp_path) == ["Truck", "Car"]


# --- against the real server ---------------------------------------------------------------


def make_frames(data_dir: Path) -> list[tuple[StoredFrame, bytes]]:
    """The real CriTer frame and three small ones, with their sidecars."""
    store = FilesystemStorage(data_dir)
    specs = [Spec("CWL9018", 0, "night", "rain"), Spec("CWL9018", 90, "dawn", "fog"),
             Spec("CAM_B", 5, "day", None), Spec("CAM_B", 600, "dusk", "clear")]
    frames = []
    for n, spec in enumerate(specs):
        data = FIXTURE.read_bytes() if n == 0 else jpeg(40 * n, (320, 180))
        meta = {**sidecar(spec, n), "width": 1920 if n == 0 else 320,
                "height": 1080 if n == 0 else 180}
        when = datetime.fromisoformat(meta["captured_at"])
        frames.append((store.write(Frame(spec.camera, when, data, meta)), data))
    return frames


def push(server: LabelStudio, data_dir: Path, *args: str,
         monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", server.token)
    return main(["push", "--data-dir", str(data_dir), "--url", server.url, "--rate", "0",
                 *args])


def tasks_of(server: LabelStudio, project: int) -> list[dict[str, Any]]:
    return list(server.api("GET", f"/api/tasks/?project={project}&page_size=100&fields=all")
                ["tasks"])


def created_project(err: str) -> int:
    line = next(line for line in err.splitlines() if line.startswith("created project "))
    return int(line.split()[2])


def box(x: float, y: float, w: float, h: float, label: str) -> dict[str, Any]:
    return {"type": "rectanglelabels", "from_name": "label", "to_name": "image",
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0,
                      "rectanglelabels": [label]}}


def yolo(b: dict[str, Any]) -> tuple[int, float, float, float, float]:
    v = b["value"]
    return (DEFAULT_LABELS.index(v["rectanglelabels"][0]), (v["x"] + v["width"] / 2) / 100,
            (v["y"] + v["height"] / 2) / 100, v["width"] / 100, v["height"] / 100)


@pytest.mark.labelstudio
def test_round_trip_push_annotate_pull(label_studio: LabelStudio, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    frames = make_frames(data)
    real = frames[0][0]
    preds = tmp_path / "preds"
    preds.mkdir()
    (preds / "classes.txt").write_text("Car\nTruck\nTram\n")
    (preds / f"{Path(real.key).stem}.txt").write_text(
        "0 0.25 0.5 0.1 0.2 0.9\n1 0.75 0.5 0.3 0.2 0.7\n2 0.5 0.5 0.1 0.1 0.5\n")
    assert main(["sample", "--data-dir", str(data), "--n", "4",
                 "--out", str(tmp_path / "s.json")]) == 0
    assert push(label_studio, data, "--create", "lyoncam push round trip", "--sample",
                str(tmp_path / "s.json"), "--predictions", str(preds), "--batch", "3",
                monkeypatch=monkeypatch) == 0
    out, err = capsys.readouterr()
    pid = created_project(err)
    assert f"project {pid}: 4 frames pushed (1 with predictions), 0 already there" in out
    assert "'Tram' is not a label of the project: 1 box left out" in err
    tasks = {t["data"]["lyoncam_key"]: t for t in tasks_of(label_studio, pid)}
    assert set(tasks) == {f.key for f, _ in frames}
    for f, _ in frames:
        d = tasks[f.key]["data"]
        assert (d["camera"], d["captured_at"], d["daypart"], d["weather"]) == (
            f.sidecar["camera_id"], f.sidecar["captured_at"], f.sidecar["daypart"],
            (f.sidecar["weather"] or {}).get("label"))
    predicted = tasks[real.key]["predictions"][0]["result"]
    assert [r["value"]["rectanglelabels"] for r in predicted] == [["Car"], ["Truck"]]

    # The labeller accepts the predicted boxes on the real frame and draws on the others.
    given = {real.key: [dict(r) for r in predicted],
             frames[1][0].key: [box(10, 20, 30, 40, "Bus")],
             frames[2][0].key: [box(0, 0, 50, 50, "Pedestrian"), box(60, 10, 5, 5, "Bicycle")],
             frames[3][0].key: []}
    for key, result in given.items():
        label_studio.api("POST", f"/api/tasks/{tasks[key]['id']}/annotations/",
                         {"result": result})

    ds = tmp_path / "ds"
    env = {**os.environ, "LABEL_STUDIO_API_KEY": label_studio.token}
    pulled = subprocess.run(
        [sys.executable, "-m", "lyoncam_daemon", "pull", "--url", label_studio.url, "--project",
         str(pid), "--out", str(ds), "--rate", "0"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert pulled.returncode == 0, pulled.stderr[-3000:]
    for f, original in frames:
        stem = Path(f.key).stem
        [image] = list(ds.glob(f"images/*/{stem}.jpg"))
        assert image.read_bytes() == original  # byte for byte
        rows = [tuple(float(x) for x in line.split())
                for line in (ds / "labels" / image.parent.name / f"{stem}.txt").read_text()
                .splitlines()]
        want = [yolo(b) for b in given[f.key]]
        assert len(rows) == len(want)
        for got, exp in zip(rows, want, strict=True):
            assert got == pytest.approx(exp, abs=1e-6)


@pytest.mark.labelstudio
def test_push_is_idempotent_even_after_a_crash_mid_batch(
    label_studio: LabelStudio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "data"
    frames = [f for f, _ in make_frames(data)]
    first3 = tmp_path / "three.json"
    first3.write_text(json.dumps({"frames": [{"key": f.key} for f in frames[:3]]}))
    assert push(label_studio, data, "--create", "lyoncam push idempotent", "--sample",
                str(first3), monkeypatch=monkeypatch) == 0
    pid = created_project(capsys.readouterr().err)
    assert push(label_studio, data, "--project", str(pid), "--sample", str(first3),
                monkeypatch=monkeypatch) == 0
    assert f"project {pid}: 0 frames pushed (0 with predictions), 3 already there" in \
        capsys.readouterr().out

    # A crash: two frames imported but not yet recorded, a fourth recorded as pending only.
    with sqlite3.connect(index_path(data)) as db:
        db.execute("UPDATE pushed SET task_id = NULL WHERE key IN (?, ?)",
                   (frames[0].key, frames[1].key))
        db.execute("INSERT INTO pushed VALUES (?, ?, ?, NULL, 0)",
                   (frames[3].key, label_studio.url, pid))
    everything = tmp_path / "all.json"
    everything.write_text(json.dumps({"frames": [{"key": f.key} for f in frames]}))
    assert push(label_studio, data, "--project", str(pid), "--sample", str(everything),
                monkeypatch=monkeypatch) == 0
    assert (f"project {pid}: 1 frames pushed (0 with predictions), 3 already there, "
            "2 found from an interrupted run") in capsys.readouterr().out
    keys = [t["data"]["lyoncam_key"] for t in tasks_of(label_studio, pid)]
    assert sorted(keys) == sorted(f.key for f in frames)  # each frame once
    # `sample` skips what was pushed.
    assert main(["sample", "--data-dir", str(data), "--n", "4"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["frames"] == []


@pytest.mark.labelstudio
def test_push_errors_are_one_line(label_studio: LabelStudio, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    make_frames(data)
    assert push(label_studio, data, "--project", "999999", "--n", "1",
                monkeypatch=monkeypatch) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "999999" in err[-1]
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "not-a-valid-token-0123456789")
    assert main(["push", "--data-dir", str(data), "--url", label_studio.url, "--project", "1",
                 "--n", "1"]) == 1
    assert "error:" in capsys.readouterr().err
    assert main(["push", "--data-dir", str(data), "--url", "ftp://x", "--project", "1",
                 "--n", "1"]) == 2


def projects_titled(server: LabelStudio, title: str) -> int:
    listing = server.api("GET", "/api/projects?page_size=1000")
    results = listing["results"] if isinstance(listing, dict) else listing
    return sum(p["title"] == title for p in results)


@pytest.mark.labelstudio
def test_push_skips_frames_gone_from_disk_and_checks_the_rest_before_creating_anything(
    label_studio: LabelStudio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "data"
    frames = [f for f, _ in make_frames(data)]
    assert main(["index", "--data-dir", str(data)]) == 0
    chosen = tmp_path / "all.json"
    chosen.write_text(json.dumps({"frames": [{"key": f.key} for f in frames]}))
    # A frame deleted behind the index's back, and one whose file cannot be read.
    (data / frames[1].key).unlink()
    (data / frames[1].key).with_suffix(".json").unlink()
    (data / frames[2].key).unlink()
    (data / frames[2].key).mkdir()
    capsys.readouterr()
    title = "lyoncam push unreadable"
    assert push(label_studio, data, "--create", title, "--sample", str(chosen),
                monkeypatch=monkeypatch) == 1
    err = capsys.readouterr().err
    assert f"error: cannot read {data / frames[2].key}: not a regular file; nothing was sent" \
        in err
    assert projects_titled(label_studio, title) == 0  # nothing created
    (data / frames[2].key).rmdir()
    (data / frames[2].key).with_suffix(".json").unlink()
    title = "lyoncam push gone"
    assert push(label_studio, data, "--create", title, "--sample", str(chosen),
                monkeypatch=monkeypatch) == 0
    out, err = capsys.readouterr()
    assert f"warning: {frames[1].key} is gone from {data}: skipped" in err
    pid = created_project(err)
    assert f"project {pid}: 2 frames pushed" in out
    assert {t["data"]["lyoncam_key"] for t in tasks_of(label_studio, pid)} == {
        frames[0].key, frames[3].key}
