"""`retention.keep_variety`: on a skewed tree the common cell shrinks, the thin ones survive,
and the index agrees with the tree afterwards."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import structlog

from lyoncam_daemon.capture.daemon import Daemon
from lyoncam_daemon.config import RetentionSettings
from lyoncam_daemon.curation.index import IndexCells, connect, index_path, refresh
from lyoncam_daemon.devtools.simulator import CriterSimulator, camera_ids
from lyoncam_daemon.storage.retention import RetentionPass
from lyoncam_daemon.storage.variety import CellFrame, plan_variety
from tests._curation import Spec, make_tree
from tests.conftest import make_config

Cell = tuple[str, str, str]
COMMON: Cell = ("A", "day", "clear")

#: Thin cells first in time: oldest-days-first would take them before anything else.
SKEWED = ([Spec("A", m, "night", "rain") for m in range(5)]
          + [Spec("B", m, "night", "snow") for m in range(3)]
          + [Spec("A", 10 + m, "dusk", "fog") for m in range(25)]
          + [Spec("B", 40 + m, "day", "clear") for m in range(30)]
          + [Spec("A", 100 + m, "day", "clear") for m in range(200)])


def tree_cells(data_dir: Path) -> Counter[Cell]:
    cells: Counter[Cell] = Counter()
    for sidecar in data_dir.glob("[AB]/**/*.json"):
        meta = json.loads(sidecar.read_text())
        cells[(meta["camera_id"], meta["daypart"], meta["weather"]["label"])] += 1
    return cells


def index_cells(data_dir: Path) -> Counter[Cell]:
    with connect(index_path(data_dir)) as db:
        return Counter({(c, d, w): n for c, d, w, n in db.execute(
            "SELECT camera, daypart, weather, count(*) FROM frames "
            "WHERE camera IN ('A', 'B') GROUP BY 1, 2, 3")})


def tree_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.glob("[AB]/**/*") if p.is_file())


def policy(**kw: object) -> RetentionSettings:
    return RetentionSettings.model_validate(kw)


def test_the_plan_takes_from_the_fullest_cell_oldest_first() -> None:
    frames = ([CellFrame(f"a{i}", ("A", "day", "clear"), f"t{i:03d}", 10) for i in range(50)]
              + [CellFrame(f"b{i}", ("A", "night", "rain"), f"t{i:03d}", 10) for i in range(30)]
              + [CellFrame(f"c{i}", ("B", "day", "clear"), f"t{i:03d}", 10) for i in range(5)])
    plan = plan_variety(frames, excess=300, floor=20)
    # 50 vs 30: the first 20 from the day cell (down to 30), then alternately.
    assert Counter(f.cell for f in plan.doomed) == {("A", "day", "clear"): 25,
                                                    ("A", "night", "rain"): 5}
    assert [f.key for f in plan.doomed[:3]] == ["a0", "a1", "a2"]  # oldest first
    everything = plan_variety(frames, excess=10**6, floor=20)
    kept = Counter(f.cell for f in frames) - Counter(f.cell for f in everything.doomed)
    assert kept == {("A", "day", "clear"): 20, ("A", "night", "rain"): 20,
                    ("B", "day", "clear"): 5}
    assert everything.short > 0
    # A camera's newest frame is never planned, even in a cell above the floor.
    newest = plan_variety(frames[:50], excess=10**6, floor=0)
    assert "a49" not in {f.key for f in newest.doomed} and len(newest.doomed) == 49


def test_the_common_cell_shrinks_the_thin_ones_survive_and_the_index_agrees(
        tmp_path: Path) -> None:
    make_tree(tmp_path, SKEWED)
    refresh(tmp_path)
    before = tree_cells(tmp_path)
    per_frame = tree_bytes(tmp_path) / len(SKEWED)
    limit = int(tree_bytes(tmp_path) - 150 * per_frame)
    done = RetentionPass(tmp_path, policy(max_bytes=limit), cells=IndexCells(tmp_path),
                         floor=20).run()
    after = tree_cells(tmp_path)
    assert tree_bytes(tmp_path) <= limit
    assert 140 <= before[COMMON] - after[COMMON] <= 160
    assert {c: n for c, n in after.items() if c != COMMON} == {
        c: n for c, n in before.items() if c != COMMON}
    assert dict(done.cells) == {COMMON: before[COMMON] - after[COMMON]}
    assert index_cells(tmp_path) == after  # the rows went in the same pass
    # Oldest first within the cell: what is left of it is its newest frames.
    with connect(index_path(tmp_path)) as db:
        left = [m for (m,) in db.execute(
            "SELECT captured_at FROM frames WHERE camera = 'A' AND daypart = 'day'")]
    assert min(left) > "2026-11-20T02:"  # minute 100 + 140 or later

    # Far over the limit: every cell down to 20, the thin ones whole, the newest kept.
    done = RetentionPass(tmp_path, policy(max_bytes=1000), cells=IndexCells(tmp_path),
                         floor=20).run()
    assert tree_cells(tmp_path) == {("A", "night", "rain"): 5, ("B", "night", "snow"): 3,
                                    ("A", "dusk", "fog"): 20, ("B", "day", "clear"): 20,
                                    COMMON: 20}
    assert index_cells(tmp_path) == tree_cells(tmp_path)
    assert done.short_bytes > 0


def test_without_keep_variety_the_oldest_go_first(tmp_path: Path) -> None:
    """The contrast: oldest-days-first on the same tree takes the thin cells' frames."""
    make_tree(tmp_path, SKEWED)
    refresh(tmp_path)
    limit = int(tree_bytes(tmp_path) * 0.5)
    RetentionPass(tmp_path, policy(max_bytes=limit, keep_variety=False),
                  cells=IndexCells(tmp_path)).run()
    after = tree_cells(tmp_path)
    assert after[("A", "night", "rain")] == 0 and after[("B", "night", "snow")] == 0
    assert index_cells(tmp_path) == after


async def test_the_daemon_logs_per_cell_what_it_deleted(tmp_path: Path) -> None:
    make_tree(tmp_path, SKEWED)
    refresh(tmp_path)
    limit = int(tree_bytes(tmp_path) - 100 * tree_bytes(tmp_path) / len(SKEWED))
    ids = camera_ids(1)
    async with CriterSimulator(ids, period=0.3) as sim:
        config = make_config(tmp_path, {ids[0]: sim.url(ids[0])}, interval=0.2,
                             extra=f"retention:\n  max_bytes: {limit}\n  "
                                   "interval: 3600")
        with structlog.testing.capture_logs() as logs:
            daemon = Daemon(config)
            task = asyncio.create_task(daemon.run())
            for _ in range(500):
                if any(e["event"] == "retention pass" for e in logs):
                    break
                await asyncio.sleep(0.02)
            daemon.request_stop()
            assert await asyncio.wait_for(task, timeout=15) == 0
    [line] = [e for e in logs if e["event"] == "retention pass"]
    assert line["cells"].startswith("A/day/clear: ")
    assert "night" not in line["cells"]
    assert index_cells(tmp_path) == tree_cells(tmp_path)


def test_days_deleted_for_their_age_leave_the_index_too(tmp_path: Path) -> None:
    make_tree(tmp_path, [Spec("A", m, "night", "rain") for m in range(3)]
              + [Spec("A", 2 * 1440 + m, "day", "clear") for m in range(2)])
    refresh(tmp_path)
    with connect(index_path(tmp_path)) as db:
        db.execute("INSERT INTO predictions SELECT key, 'm', 0, 0 FROM frames")
    done = RetentionPass(tmp_path, policy(max_age_days=1), cells=IndexCells(tmp_path)).run()
    # The first day whole, then the newest day frame by frame but for the camera's newest.
    assert (done.days, done.frames) == (1, 4)
    assert tree_cells(tmp_path) == index_cells(tmp_path) == {COMMON: 1}
    with connect(index_path(tmp_path)) as db:
        assert db.execute("SELECT count(*) FROM predictions").fetchone() == (1,)
