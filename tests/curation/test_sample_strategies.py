"""`sample --strategy uncertain|rare` on an index with known predictions picks what it says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lyoncam_daemon.cli import main
from lyoncam_daemon.curation.index import connect, index_path, refresh
from lyoncam_daemon.curation.predictions import FoundBox, record
from tests._curation import Spec, make_tree

CAR_SURE = FoundBox(0, "Car", 0.9)

# Cells: A night/clear 40 frames, A day/rain 10, B day/clear 20. Frames 60 and 61 of A
# night are one scene (near-duplicates of each other).
SPECS = ([Spec("A", m, "night", "clear") for m in range(40)]
         + [Spec("A", 600 + m, "day", "rain") for m in range(10)]
         + [Spec("B", 900 + m, "day", "clear") for m in range(20)]
         + [Spec("A", 100 + m, "night", "clear", scene=3) for m in range(2)])


def boxes(*scores: float, label: str = "Car") -> list[FoundBox]:
    return [FoundBox(0, label, s) for s in scores]


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, list[str]]:
    keys = [f.key for f in make_tree(tmp_path, SPECS)]
    refresh(tmp_path)
    with connect(index_path(tmp_path)) as db:
        # An older model thought differently about other frames: it must not count.
        record(db, "old.onnx@000000000000", [(keys[i], boxes(0.3)) for i in range(40, 50)],
               now=1.0)
        predicted = {k: [CAR_SURE] for k in keys}
        predicted.update({
            keys[5]: boxes(0.4, 0.3, 0.5, 0.9),   # A night: 3 in the band
            keys[6]: boxes(0.3),                  # A night: 1
            keys[25]: boxes(0.55, 0.26),          # A night: 2
            keys[42]: boxes(0.5, 0.9),            # A rain: 1
            keys[60]: boxes(0.3, 0.3),            # B: 2
            keys[70]: boxes(0.3),                 # A night, a scene twice...
            keys[71]: boxes(0.3),                 # ...its near-duplicate
            keys[7]: [FoundBox(1, "person", 0.8)],
            keys[52]: [FoundBox(2, "Bus", 0.7)],
            keys[53]: [FoundBox(3, "bicycle", 0.7), FoundBox(2, "Bus", 0.6)],
        })
        record(db, "new.onnx@111111111111", list(predicted.items()), now=2.0)
    return tmp_path, keys


def run_sample(data_dir: Path, capsys: pytest.CaptureFixture[str], *args: str
               ) -> tuple[dict[str, str], str]:
    out = data_dir.parent / "s.json"
    assert main(["sample", "--data-dir", str(data_dir), "--out", str(out), *args]) == 0
    err = capsys.readouterr().err
    return {f["key"]: f["reason"] for f in json.loads(out.read_text())["frames"]}, err


def test_uncertain_takes_frames_in_the_band_spread_over_cells(
        data: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    data_dir, keys = data
    got, err = run_sample(data_dir, capsys, "--n", "3", "--strategy", "uncertain")
    # One per cell: the most hesitant frame of A night (3 boxes), A rain's, B's.
    assert got == {keys[5]: "uncertain: 3 boxes scoring 0.25-0.6",
                   keys[42]: "uncertain: 1 box scoring 0.25-0.6",
                   keys[60]: "uncertain: 2 boxes scoring 0.25-0.6"}
    assert "uncertain: 7 of 72 frames predicted by new.onnx@111111111111 qualify" in err
    assert "took 3 frames (3 uncertain)" in err


def test_uncertain_skips_near_duplicates_and_pushed_then_fills_balanced(
        data: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    data_dir, keys = data
    with connect(index_path(data_dir)) as db:
        db.execute("INSERT INTO pushed VALUES (?, 'http://ls', 1, 5, 0)", (keys[25],))
    got, err = run_sample(data_dir, capsys, "--n", "10", "--strategy", "uncertain")
    uncertain = {k for k, why in got.items() if why.startswith("uncertain")}
    assert uncertain == {keys[5], keys[6], keys[42], keys[60], keys[70]} or \
        uncertain == {keys[5], keys[6], keys[42], keys[60], keys[71]}
    assert keys[25] not in got
    assert sum(why == "balanced" for why in got.values()) == 5
    assert "took 10 frames (5 uncertain, 5 balanced); 1 near-duplicates skipped, " \
        "1 already pushed left out" in err


def test_the_band_and_the_model_can_be_chosen(
        data: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    data_dir, keys = data
    got, _ = run_sample(data_dir, capsys, "--n", "1", "--strategy", "uncertain",
                        "--band", "0.5,0.6")
    assert set(got) <= {keys[5], keys[25], keys[42]}
    got, _ = run_sample(data_dir, capsys, "--n", "10", "--strategy", "uncertain",
                        "--model-version", "old.onnx@000000000000")
    assert {k for k, why in got.items() if why != "balanced"} == set(keys[40:50])


def test_rare_takes_frames_with_rare_classes_whatever_their_spelling(
        data: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    data_dir, keys = data
    got, _ = run_sample(data_dir, capsys, "--n", "3", "--strategy", "rare")
    assert got == {keys[7]: "rare: pedestrian", keys[52]: "rare: bus",
                   keys[53]: "rare: bicycle, bus"}
    # B has two rare frames: with room for one there, the one with two rare classes.
    got, _ = run_sample(data_dir, capsys, "--n", "2", "--strategy", "rare")
    assert got == {keys[7]: "rare: pedestrian", keys[53]: "rare: bicycle, bus"}
    got, _ = run_sample(data_dir, capsys, "--n", "1", "--strategy", "rare", "--rare", "bicycle")
    assert got == {keys[53]: "rare: bicycle"}


def test_a_strategy_without_predictions_says_what_to_do(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_tree(tmp_path, SPECS[:3])
    assert main(["sample", "--data-dir", str(tmp_path), "--n", "2",
                 "--strategy", "rare"]) == 2
    assert "run `predict --model FILE` first" in capsys.readouterr().err
    assert main(["sample", "--data-dir", str(tmp_path), "--n", "2",
                 "--strategy", "balanced"]) == 0
