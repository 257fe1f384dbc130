"""`push --model`: the user's detector runs on what is pushed, and the real Label Studio
shows its boxes as predictions; the labelled project then comes back through `pull`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lyoncam_daemon.cli import main
from lyoncam_daemon.curation.index import connect, index_path
from lyoncam_daemon.curation.predict import file_sha256
from tests._onnx import build, tree

from .conftest import REPO, LabelStudio
from .test_push import created_project, push, tasks_of


@pytest.mark.labelstudio
def test_push_model_attaches_predictions_then_pull_brings_the_labels_back(
        label_studio: LabelStudio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    keys = tree(data, [("A", 0, 1, 1), ("A", 60, 2, 0), ("B", 5, 0, 0)])
    # Class 0 (red) is "person": the project calls it Pedestrian. Class 1 (blue) is a Tram,
    # which the project lacks.
    model = build(tmp_path / "detector.onnx", "v8", names=["person", "Tram"])
    version = f"detector.onnx@{file_sha256(model)[:12]}"
    sample = tmp_path / "s.json"
    assert main(["sample", "--data-dir", str(data), "--n", "3", "--out", str(sample)]) == 0
    assert push(label_studio, data, "--create", "lyoncam push --model", "--sample", str(sample),
                "--model", str(model), "--conf", "0.6", "--batch", "2",
                monkeypatch=monkeypatch) == 0
    out, err = capsys.readouterr()
    pid = created_project(err)
    assert f"project {pid}: 3 frames pushed (2 with predictions), 0 already there" in out
    assert "'Tram' is not a label of the project: 1 box left out" in err

    tasks = {t["data"]["lyoncam_key"]: t for t in tasks_of(label_studio, pid)}
    assert set(tasks) == set(keys)
    assert tasks[keys[2]]["predictions"] == []  # nothing found there: no prediction
    ids = []
    for key, xs in ((keys[0], [25.0]), (keys[1], [25.0, 100.0])):
        [p] = tasks[key]["predictions"]
        assert p["model_version"] == version
        assert 0.85 < p["score"] <= 1.0
        results = sorted(p["result"], key=lambda r: r["value"]["x"])
        assert [r["value"]["rectanglelabels"] for r in results] == [["Pedestrian"]] * len(xs)
        for r, x in zip(results, xs, strict=True):
            v = r["value"]
            # A 50 px square at (x, 25) of a 300 x 150 frame, in percent of the image.
            assert v["x"] == pytest.approx(x / 3, abs=1.0)
            assert v["y"] == pytest.approx(25 / 1.5, abs=1.0)
            assert v["width"] == pytest.approx(50 / 3, abs=1.0)
            assert v["height"] == pytest.approx(50 / 1.5, abs=1.5)
            assert 0.85 < r["score"] <= 1.0
            assert (r["original_width"], r["original_height"]) == (300, 150)
            ids.append(r["id"])
    assert len(set(ids)) == len(ids) == 3
    # What the model found is in the index too, for `sample --strategy`.
    with connect(index_path(data)) as db:
        assert db.execute("SELECT count(*) FROM predictions WHERE model = ?",
                          (version,)).fetchone() == (3,)

    # The labeller accepts the predictions as they are; pull brings them back as YOLO.
    for key in keys[:2]:
        result = tasks[key]["predictions"][0]["result"]
        label_studio.api("POST", f"/api/tasks/{tasks[key]['id']}/annotations/",
                         {"result": result})
    label_studio.api("POST", f"/api/tasks/{tasks[keys[2]]['id']}/annotations/", {"result": []})
    ds = tmp_path / "ds"
    env = {**os.environ, "LABEL_STUDIO_API_KEY": label_studio.token}
    pulled = subprocess.run(
        [sys.executable, "-m", "lyoncam_daemon", "pull", "--url", label_studio.url, "--project",
         str(pid), "--out", str(ds), "--rate", "0"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert pulled.returncode == 0, pulled.stderr[-3000:]
    names = (ds / "classes.txt").read_text().split()
    for key, boxes in ((keys[0], 1), (keys[1], 2), (keys[2], 0)):
        stem = Path(key).stem
        [label] = list(ds.glob(f"labels/*/{stem}.txt"))
        rows = [line.split() for line in label.read_text().splitlines()]
        assert len(rows) == boxes
        assert all(names[int(r[0])] == "Pedestrian" for r in rows)
        assert all(float(r[2]) == pytest.approx(50 / 150, abs=0.01) for r in rows)  # cy
