"""The local change test in the running daemon (issue 16): the reference rebuilt from the
newest stored frame after a restart, the heartbeat on a fake clock, the sidecar's `change`
record, and `compare` giving the daemon's own numbers for the same pair."""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from pathlib import Path

from PIL import Image

from lyoncam_daemon.capture.daemon import Daemon
from lyoncam_daemon.cli import main as cli
from lyoncam_daemon.config import Config
from lyoncam_daemon.frames.change import CELL_PX
from tests._scene import poll, serving
from tests.conftest import make_config, run_until, stored_frames


def config(tmp_path: Path, url: str, extra: str = "") -> Config:
    return make_config(tmp_path / "data", {"CAM": url}, interval=0.1, extra=extra)


def newest_sidecar(tmp_path: Path) -> dict[str, object]:
    frames = stored_frames(tmp_path / "data", "CAM")
    data = json.loads(frames[-1].with_suffix(".json").read_text())
    assert isinstance(data, dict)
    return data


async def test_after_a_restart_the_reference_comes_back_from_the_stored_frame(
        tmp_path: Path) -> None:
    async with serving() as scene:
        scene.body = poll(1)
        await run_until(config(tmp_path, scene.url),
                        lambda d: d.stats.camera("CAM").outcomes["stored"] >= 1, "first frame")
        # A restart, then the same scene with other noise: judged against the rebuilt
        # reference, not stored as a first frame.
        scene.body = poll(2)
        again = await run_until(
            config(tmp_path, scene.url),
            lambda d: d.stats.camera("CAM").outcomes["near_duplicate"] >= 2, "copies judged")
        assert again.stats.camera("CAM").outcomes["stored"] == 0
        # And a 32 px person after another restart: found by the local test.
        scene.body = poll(3, with_person=32)
        third = await run_until(config(tmp_path, scene.url),
                                lambda d: d.stats.camera("CAM").outcomes["stored"] >= 1,
                                "the person's frame")
    assert third.stats.camera("CAM").outcomes["stored"] == 1
    change = newest_sidecar(tmp_path)["change"]
    assert isinstance(change, dict)
    assert change["reason"] == "tile"
    assert change["distance"] <= change["distance_threshold"]  # the fingerprint saw nothing
    assert change["tile_score"] > change["tile_threshold"]
    x, y, w, h = change["tile_box"]
    # The person stands at x 900-912, y 768-800: the box is a cell inside it.
    assert 896 <= x <= 912 and 760 <= y <= 800 and w == h == CELL_PX


async def test_keep_every_stores_one_heartbeat_per_period_on_a_fake_clock(
        tmp_path: Path) -> None:
    """The same scene (new noise every poll) for 30 minutes of a fake wall clock: nothing
    is stored until the period is over, then one frame, marked `heartbeat`."""
    now = [1_800_000_000.0]
    serial = iter(range(10, 10_000))

    def outcomes(d: Daemon) -> Counter[str]:
        return Counter(d.stats.camera("CAM").outcomes)

    async with serving() as scene:
        scene.body = poll(1)
        cfg = config(tmp_path, scene.url, "dedup:\n  keep_every: 30m")

        def copies(d: Daemon) -> bool:
            scene.body = poll(next(serial))  # another copy for the next poll
            return outcomes(d)["near_duplicate"] >= 3

        first = await run_until(cfg, lambda d: outcomes(d)["stored"] >= 1, "the first frame",
                                clock=lambda: now[0])
        now[0] += 1799  # a restart within the period: copies are dropped
        within = await run_until(cfg, copies, "copies", clock=lambda: now[0])
        now[0] += 1  # the period is over: the next copy is stored, marked
        beat = await run_until(cfg, lambda d: copies(d) or outcomes(d)["stored"] >= 1,
                               "the heartbeat", clock=lambda: now[0])
    assert outcomes(first)["stored"] == 1 and outcomes(within)["stored"] == 0
    assert outcomes(beat)["stored"] == 1
    side = newest_sidecar(tmp_path)
    assert isinstance(side["change"], dict) and side["change"]["reason"] == "heartbeat"
    assert side["captured_at"] == "2027-01-15T08:30:00.000Z"  # the fake clock's time
    assert len(stored_frames(tmp_path / "data", "CAM")) == 2


async def test_compare_prints_the_numbers_the_daemon_wrote(tmp_path: Path) -> None:
    async with serving() as scene:
        scene.body = poll(1)
        cfg = config(tmp_path, scene.url)
        await run_until(cfg, lambda d: d.stats.camera("CAM").outcomes["stored"] >= 1, "A")
        scene.body = poll(2, with_person=32)
        await run_until(cfg, lambda d: d.stats.camera("CAM").outcomes["stored"] >= 1, "B")
    a, b = stored_frames(tmp_path / "data", "CAM")
    daemon_change = json.loads(b.with_suffix(".json").read_text())["change"]
    assert daemon_change["reason"] == "tile"
    out = io.StringIO()
    png = tmp_path / "changed.png"
    with contextlib.redirect_stdout(out):
        assert cli(["compare", str(a), str(b), "--json", "--png", str(png)]) == 0
    printed = json.loads(out.getvalue())
    assert printed == {"outcome": "stored", "change": daemon_change}
    with Image.open(png) as im:
        im.load()
        assert im.format == "PNG" and im.size == (1920, 1080)
        x, y, _, h = daemon_change["tile_box"]
        # the highest cell is outlined in yellow around its box
        assert im.convert("RGB").getpixel((x - 2, y + h // 2)) == (255, 230, 0)
