"""`predict` end to end: a data tree, a real ONNX detector, label files and the index."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from lyoncam_daemon.cli import main
from lyoncam_daemon.curation.index import connect, index_path, refresh
from lyoncam_daemon.curation.predictions import latest_model, models
from lyoncam_daemon.labelstudio.push import read_boxes
from tests._onnx import build, tree

REPO = Path(__file__).resolve().parents[2]


def test_predict_writes_scored_labels_and_records_the_index(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, out = tmp_path / "data", tmp_path / "pred"
    keys = tree(data, [("A", 0, 1, 0), ("A", 5, 2, 1), ("B", 3000, 0, 0)])
    model = build(tmp_path / "det.onnx", "v8", names=["Car", "Bicycle"])
    assert main(["predict", "--data-dir", str(data), "--model", str(model), "--out", str(out),
                 "--conf", "0.6", "--batch", "2"]) == 0
    printed = capsys.readouterr().out
    assert "3 frames, 4 boxes" in printed and "frames/s" in printed
    assert (out / "classes.txt").read_text() == "Car\nBicycle\n"
    stems = [k.rsplit("/", 1)[-1].removesuffix(".jpg") for k in keys]
    got = [sorted((b.class_id, round(b.cx, 2)) for b in read_boxes(out / "labels" /
                                                                   f"{s}.txt")) for s in stems]
    assert got == [[(0, 0.17)], [(0, 0.17), (0, 0.42), (1, 0.17)], []]
    assert all(b.score is not None and b.score > 0.85
               for b in read_boxes(out / "labels" / f"{stems[1]}.txt"))
    with connect(index_path(data)) as db:
        version = latest_model(db)
        assert version is not None and version.startswith("det.onnx@")
        assert models(db) == {version: 3}
        rows = db.execute("SELECT key, label FROM predicted_boxes ORDER BY key, n").fetchall()
        assert sorted(label for k, label in rows if k == keys[1]) == ["Bicycle", "Car", "Car"]
    # Again with the same model: the frame's rows are replaced, not added.
    assert main(["predict", "--data-dir", str(data), "--model", str(model), "--out", str(out),
                 "--conf", "0.6", "--camera", "A"]) == 0
    with connect(index_path(data)) as db:
        assert db.execute("SELECT count(*) FROM predicted_boxes").fetchone() == (4,)


def test_camera_since_and_sample_select_the_frames(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    data, out = tmp_path / "data", tmp_path / "pred"
    tree(data, [("A", 0, 1, 0), ("A", 3000, 1, 0), ("B", 3000, 1, 0)])
    model = build(tmp_path / "det.onnx", "v5")
    assert main(["predict", "--data-dir", str(data), "--model", str(model), "--out", str(out),
                 "--camera", "A", "--since", "2026-11-21"]) == 0
    assert "1 frames" in capsys.readouterr().out
    assert len(list((out / "labels").iterdir())) == 1
    sample = tmp_path / "sample.json"
    assert main(["sample", "--data-dir", str(data), "--n", "2", "--out", str(sample)]) == 0
    capsys.readouterr()
    # The sample file names its data directory: no --data-dir needed.
    monkeypatch.chdir(REPO)  # beside the repository's own cameras.yaml: the sample wins
    assert main(["predict", "--sample", str(sample),
                 "--model", str(model), "--out", str(tmp_path / "p2")]) == 0
    assert "2 frames" in capsys.readouterr().out


def test_an_unreadable_frame_is_named_and_the_rest_is_done(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, out = tmp_path / "data", tmp_path / "pred"
    keys = tree(data, [("A", 0, 1, 0), ("A", 5, 1, 0)])
    refresh(data)
    (data / keys[0]).write_bytes(b"not a jpeg")
    model = build(tmp_path / "det.onnx", "v8")
    assert main(["predict", "--data-dir", str(data), "--model", str(model),
                 "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert f"cannot read {data / keys[0]}" in captured.err
    assert "1 frames" in captured.out and "1 frames unreadable" in captured.out
    assert "carries no class names" in captured.err


def test_a_model_of_neither_layout_is_a_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    tree(data, [("A", 0, 1, 0)])
    model = build(tmp_path / "odd.onnx", "bad")
    assert main(["predict", "--data-dir", str(data), "--model", str(model),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "[batch, 6, 273, 1]" in err[0]


def test_an_index_made_before_predictions_opens_and_gains_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    tree(data, [("A", 0, 1, 0)])
    path = index_path(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The index as lyoncam 0.1 made it: frames and pushed only.
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE frames (key TEXT PRIMARY KEY, camera TEXT NOT NULL,
            captured_at TEXT NOT NULL, day TEXT NOT NULL, daypart TEXT, weather TEXT,
            sun_elevation REAL, brightness REAL, contrast REAL, sha256 TEXT, width INTEGER,
            height INTEGER, bytes INTEGER, indexed_at REAL NOT NULL) WITHOUT ROWID;
        CREATE TABLE pushed (key TEXT NOT NULL, server TEXT NOT NULL, project INTEGER NOT NULL,
            task_id INTEGER, pushed_at REAL NOT NULL, PRIMARY KEY (key, server, project))
            WITHOUT ROWID;""")
    old.close()
    refresh(data)
    model = build(tmp_path / "det.onnx", "v8", names=["Car", "Bicycle"])
    assert main(["predict", "--data-dir", str(data), "--model", str(model),
                 "--out", str(tmp_path / "o"), "--conf", "0.6"]) == 0
    with connect(path) as db:
        assert db.execute("SELECT count(*) FROM frames").fetchone() == (1,)
        assert db.execute("SELECT label FROM predicted_boxes").fetchall() == [("Car",)]
    # A frame deleted from the tree takes its predictions with it at the next `index`.
    for f in data.rglob("A_*"):
        f.unlink()
    refresh(data)
    with connect(path) as db:
        assert db.execute("SELECT count(*) FROM predictions").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM predicted_boxes").fetchone() == (0,)
