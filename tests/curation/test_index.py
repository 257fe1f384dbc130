"""The frame index: kept current by the daemon's hook, rebuilt from the sidecars."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from lyoncam_daemon.capture.daemon import Daemon
from lyoncam_daemon.cli import main
from lyoncam_daemon.curation.index import (
    IndexHook,
    connect,
    frame_keys,
    index_path,
    refresh,
    row_of,
    upsert,
)
from lyoncam_daemon.devtools.simulator import CriterSimulator
from tests._curation import T0, Spec, make_tree
from tests.conftest import make_config, stored_frames, until


def rows(data_dir: Path) -> dict[str, tuple[str, str | None, str | None]]:
    with sqlite3.connect(index_path(data_dir)) as db:
        return {k: (c, d, w) for k, c, d, w in
                db.execute("SELECT key, camera, daypart, weather FROM frames")}


async def test_the_daemon_indexes_every_stored_frame(tmp_path: Path) -> None:
    hook = IndexHook(tmp_path)
    try:
        async with CriterSimulator(["I1", "I2"], period=0.2) as sim:
            config = make_config(tmp_path, {"I1": sim.url("I1"), "I2": sim.url("I2")},
                                 interval=0.1)
            daemon = Daemon(config, hooks=[hook])
            task = asyncio.create_task(daemon.run())
            await until(lambda: all(daemon.stats.camera(c).outcomes["stored"] >= 3
                                    for c in ("I1", "I2")), "3 frames per camera")
            # WAL: a reader sees the rows while the daemon is still writing.
            assert len(rows(tmp_path)) >= 6
            daemon.request_stop()
            assert await task == 0
    finally:
        hook.close()
    indexed = rows(tmp_path)
    assert set(indexed) == set(frame_keys(tmp_path))
    assert {camera for camera, _, _ in indexed.values()} == {"I1", "I2"}
    assert all(daemon.stats.cameras[c].hook_errors == 0 for c in ("I1", "I2"))
    with sqlite3.connect(index_path(tmp_path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_refresh_adds_new_frames_drops_deleted_ones_and_names_bad_sidecars(
    tmp_path: Path,
) -> None:
    stored = make_tree(tmp_path, [Spec("A", m) for m in range(5)] + [Spec("B", 1, "day", None)])
    first = refresh(tmp_path)
    assert (first.indexed, first.removed, first.total, first.skipped) == (6, 0, 6, [])
    assert rows(tmp_path)[stored[5].key] == ("B", "day", None)
    # A frame deleted by hand, a new one, and one whose sidecar is damaged.
    gone = tmp_path / stored[0].key
    gone.unlink()
    gone.with_suffix(".json").unlink()
    more = make_tree(tmp_path, [Spec("C", 60, "dusk", "rain"), Spec("C", 61)])
    (tmp_path / more[1].key).with_suffix(".json").write_text("{not json")
    (tmp_path / "C" / "notes.json").write_text("{}")  # not a frame's name: ignored
    second = refresh(tmp_path)
    assert second.indexed == 1 and second.removed == 1 and second.total == 6
    assert len(second.skipped) == 1 and second.skipped[0][0].endswith(
        Path(more[1].key).with_suffix(".json").name)
    assert set(rows(tmp_path)) == {s.key for s in stored[1:]} | {more[0].key}


def test_rebuild_rereads_sidecars_that_changed(tmp_path: Path) -> None:
    stored = make_tree(tmp_path, [Spec("A", 0, "night", None)])
    refresh(tmp_path)
    sidecar = (tmp_path / stored[0].key).with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "weather": {"code": 71, "label": "snow"}}))
    refresh(tmp_path)
    assert rows(tmp_path)[stored[0].key] == ("A", "night", None)  # names only: not re-read
    refresh(tmp_path, rebuild=True)
    assert rows(tmp_path)[stored[0].key] == ("A", "night", "snow")


def test_a_rebuild_keeps_rows_the_daemon_wrote_while_it_ran(tmp_path: Path) -> None:
    make_tree(tmp_path, [Spec("A", m) for m in range(3)])
    refresh(tmp_path)
    late = make_tree(tmp_path, [Spec("A", 10)])[0]
    db = connect(index_path(tmp_path))
    stale = row_of("A/2026/01/01/A_20260101T000000Z.jpg",
                   {"camera_id": "A", "captured_at": "2026-01-01T00:00:00Z"}, 0.0)
    upsert(db, [stale])  # a row whose frame was deleted long ago

    def hook_meanwhile(_: int) -> None:
        # As the daemon's hook would, while the rebuild reads the sidecars.
        upsert(db, [row_of(late.key, late.sidecar, time.time())])

    (tmp_path / late.key).unlink()  # the rebuild's walk does not see it yet...
    done = refresh(tmp_path, rebuild=True, progress=hook_meanwhile)
    db.close()
    keys = set(rows(tmp_path))
    assert late.key in keys  # ...but the hook wrote it during the rebuild: kept
    assert stale[0] not in keys and done.removed == 1


def test_row_of_refuses_what_is_not_a_sidecar() -> None:
    with pytest.raises(ValueError, match="no camera_id"):
        row_of("k", {"captured_at": "2026-11-26T00:00:00Z"}, 0)
    with pytest.raises(ValueError, match="captured_at 'noon'"):
        row_of("k", {"camera_id": "A", "captured_at": "noon"}, 0)


def test_index_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_tree(tmp_path, [Spec("A", m) for m in range(4)])
    assert main(["index", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "4 frames (4 read from sidecars, 0 removed, 0 skipped)" in out
    assert main(["index", "--data-dir", str(tmp_path), "--rebuild"]) == 0
    assert "4 frames (4 read" in capsys.readouterr().out
    assert main(["index", "--data-dir", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


async def test_the_run_command_indexes_and_enriches(tmp_path: Path) -> None:
    """`run` wires the enrichers and the index hook (Daemon(config) alone has neither)."""
    async with CriterSimulator(["R1"], period=60) as sim:
        cfg = tmp_path / "cameras.yaml"
        cfg.write_text(f"data_dir: {tmp_path / 'data'}\nweather:\n  enabled: false\ncameras:\n"
                       f"  - id: R1\n    url: {sim.url('R1')}\n    lat: 45.76\n    lon: 4.84\n")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lyoncam_daemon", "run", "--config", str(cfg),
            "--log-format", "json", stderr=asyncio.subprocess.DEVNULL)
        await until(lambda: bool(stored_frames(tmp_path / "data", "R1")), "a stored frame", 20)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
    [jpg] = stored_frames(tmp_path / "data", "R1")
    meta = json.loads(jpg.with_suffix(".json").read_text())
    assert {"sun_elevation", "daypart", "brightness", "contrast"} <= set(meta)
    assert "weather" not in meta  # weather.enabled: false
    assert rows(tmp_path / "data") == {
        jpg.relative_to(tmp_path / "data").as_posix(): ("R1", meta["daypart"], None)}


def test_frames_behind_a_symlink_are_not_indexed(tmp_path: Path) -> None:
    make_tree(tmp_path / "outside", [Spec("B", m) for m in range(3)])
    make_tree(tmp_path / "data", [Spec("A", 0)])
    (tmp_path / "data" / "B").symlink_to(tmp_path / "outside" / "B")
    assert [k.split("/")[0] for k in frame_keys(tmp_path / "data")] == ["A"]


def test_retention_and_repair_drop_the_rows_of_what_they_delete(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from lyoncam_daemon.config import RetentionSettings
    from lyoncam_daemon.curation.index import IndexCells
    from lyoncam_daemon.storage.filesystem import FilesystemStorage
    from lyoncam_daemon.storage.retention import RetentionPass

    make_tree(tmp_path, [Spec("A", m * 1440) for m in range(5)])  # five days of camera A
    refresh(tmp_path)
    hook = IndexHook(tmp_path)
    try:
        now = datetime(2026, 11, 24, 12, tzinfo=UTC)
        result = RetentionPass(tmp_path, RetentionSettings(max_age_days=2), clock=lambda: now,
                               cells=IndexCells(tmp_path)).run()
        assert result.frames == 2  # 20 and 21 Nov
        assert set(rows(tmp_path)) == set(frame_keys(tmp_path))
        # The repair: a JPEG whose sidecar went is deleted at start, and so is its row.
        newest = sorted(frame_keys(tmp_path))[-1]
        (tmp_path / newest).with_suffix(".json").unlink()
        assert FilesystemStorage(tmp_path, forget=hook.forget).remove_incomplete("A") == 1
        assert newest not in rows(tmp_path)
        assert set(rows(tmp_path)) == set(frame_keys(tmp_path))
    finally:
        hook.close()


def test_index_check_says_whether_index_and_tree_agree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    stored = make_tree(tmp_path, [Spec("A", m) for m in range(4)])
    assert main(["index", "--data-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["index", "--data-dir", str(tmp_path), "--check"]) == 0
    assert capsys.readouterr().out.strip().endswith("index and tree agree: 4 frames")
    gone = tmp_path / stored[0].key
    gone.unlink()
    gone.with_suffix(".json").unlink()
    make_tree(tmp_path, [Spec("B", 0)])
    assert main(["index", "--data-dir", str(tmp_path), "--check"]) == 1
    [line] = capsys.readouterr().out.splitlines()
    assert "disagree: 1 indexed frames are gone from the tree, 1 frames are not indexed" in line
    assert main(["index", "--data-dir", str(tmp_path)]) == 0  # brings it in line
    assert main(["index", "--data-dir", str(tmp_path), "--check"]) == 0


async def test_the_run_command_drops_the_rows_of_frames_retention_deletes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """`run` wires the index to retention: after a pass, report counts what is on disk."""
    from datetime import UTC, datetime, timedelta

    data = tmp_path / "data"
    now = datetime.now(UTC)
    start = (now - timedelta(days=30) - T0).total_seconds() / 60
    # Five frames of a month ago, and one of yesterday (R1's newest day stays whole).
    make_tree(data, [*(Spec("R1", start + h * 60) for h in range(5)),
                     Spec("R1", (now - timedelta(days=1) - T0).total_seconds() / 60)])
    assert main(["index", "--data-dir", str(data)]) == 0
    async with CriterSimulator(["R1"], period=60) as sim:
        cfg = tmp_path / "cameras.yaml"
        cfg.write_text(f"data_dir: {data}\nweather:\n  enabled: false\n"
                       "retention:\n  max_age_days: 7\n"
                       f"cameras:\n  - id: R1\n    url: {sim.url('R1')}\n")
        log = tmp_path / "run.log"
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "lyoncam_daemon", "run", "--config", str(cfg),
                "--log-format", "json", "--status-port", "0", stderr=err)
            await until(lambda: '"retention pass"' in log.read_text() and any(
                f"{now:%Y%m%d}" in p.name for p in stored_frames(data, "R1")),
                "a retention pass and a new frame", 30)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
    capsys.readouterr()
    assert main(["index", "--data-dir", str(data), "--check"]) == 0, capsys.readouterr()
    assert "agree" in capsys.readouterr().out
    assert main(["report", "--data-dir", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == len(stored_frames(data, "R1"))
