"""`compare A.jpg B.jpg`: the decision in words and numbers, the camera's settings from a
config, and one clear line for what it cannot use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lyoncam_daemon.cli import main
from lyoncam_daemon.frames.judge import TILE_THRESHOLD
from tests._scene import poll


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("pair")
    a, b, copy = folder / "a.jpg", folder / "b.jpg", folder / "copy.jpg"
    a.write_bytes(poll(1))
    b.write_bytes(poll(2, with_person=48))
    copy.write_bytes(poll(3))
    return a, b, copy


def test_the_decision_is_printed_with_its_numbers(pair: tuple[Path, Path, Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    a, b, copy = pair
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "decision: stored (tile)"
    assert out[1].startswith("tile score: ") and f"(threshold {TILE_THRESHOLD}) at x=" in out[1]
    assert out[2].startswith("fingerprint distance: ") and out[2].endswith("(threshold 64)")
    assert main(["compare", str(a), str(copy)]) == 0
    assert capsys.readouterr().out.startswith("decision: near_duplicate\n")


def test_the_cameras_mask_and_sensitivity_come_from_the_config(
        pair: tuple[Path, Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    a, b, _ = pair
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text("dedup:\n  sensitivity: 2\ncameras:\n"
                   "  - id: ONE\n    url: http://127.0.0.1:9/one.jpg\n"
                   "  - id: MASKED\n    url: http://127.0.0.1:9/m.jpg\n"
                   "    ignore: [[860, 700, 120, 140]]\n")
    assert main(["compare", str(a), str(b), "--config", str(cfg), "--camera", "ONE",
                 "--json"]) == 0
    change = json.loads(capsys.readouterr().out)["change"]
    assert change["reason"] == "tile" and change["tile_threshold"] == TILE_THRESHOLD / 2
    assert main(["compare", str(a), str(b), "--config", str(cfg), "--camera", "MASKED",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["outcome"] == "near_duplicate"


def test_what_compare_cannot_use_is_one_line(pair: tuple[Path, Path, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    a, b, _ = pair
    missing = tmp_path / "missing.jpg"
    assert main(["compare", str(missing), str(b)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: cannot read {missing}: No such file or directory"]
    html = tmp_path / "page.jpg"
    html.write_bytes(b"<html>503</html>")
    assert main(["compare", str(html), str(b)]) == 1
    assert "the first image would not be stored (not_image" in capsys.readouterr().err
    assert main(["compare", str(a), str(b), "--camera", "X"]) == 1
    assert capsys.readouterr().err.strip() == "error: --camera needs --config"
    bad = tmp_path / "bad.yaml"
    bad.write_text("dedup:\n  sensitivity: 0\ncameras: []\n")
    assert main(["compare", str(a), str(b), "--config", str(bad)]) == 2
    assert "sensitivity" in capsys.readouterr().err
    assert main(["compare", str(a), str(b), "--png", str(tmp_path / "no" / "x.png")]) == 1
    assert "cannot write" in capsys.readouterr().err
