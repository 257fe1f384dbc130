"""Reload (SIGHUP): the plan (pure) and the daemon applying it against the simulator."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import signal
from collections.abc import Mapping
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from lyoncam_daemon.capture.commands import load_checked
from lyoncam_daemon.capture.daemon import Daemon
from lyoncam_daemon.capture.reload import plan_reload
from lyoncam_daemon.cli import main
from lyoncam_daemon.config import Config, parse_config
from lyoncam_daemon.devtools.simulator import CriterSimulator, camera_ids
from tests.conftest import stored_frames

FAST = {"min_interval": 0.05}


def config_text(data_dir: Path, urls: Mapping[str, str], *, interval: float = 0.2,
                extra: str = "", per_camera: Mapping[str, str] | None = None,
                grace: float = 2) -> str:
    lines = [f"data_dir: {data_dir}", f"shutdown_grace: {grace}", "log:\n  summary_interval: 1",
             extra, "defaults:", f"  interval: {interval}", "  timeout: 1", "cameras:"]
    for cam_id, url in urls.items():
        lines += [f"  - id: {cam_id}", f"    url: {url}"]
        lines += [f"    {line}" for line in (per_camera or {}).get(cam_id, "").splitlines()]
    return "\n".join(lines) + "\n"


def parsed(text: str) -> Config:
    return parse_config(text, context=FAST)


# --- the plan --------------------------------------------------------------------------------


def test_plan_sorts_cameras_into_added_removed_changed_untouched(tmp_path: Path) -> None:
    urls = {"A": "http://127.0.0.1:1/a", "B": "http://127.0.0.1:1/b", "C": "http://127.0.0.1:1/c"}
    old = parsed(config_text(tmp_path, urls))
    new = parsed(config_text(tmp_path, {**urls, "D": "http://127.0.0.1:1/d"},
                             per_camera={"B": "threshold: 10", "C": "enabled: false"}))
    plan = plan_reload(old, new)
    assert [c.id for c in plan.added] == ["D"]
    assert plan.removed == ("C",)  # disabled counts as removed
    assert [c.id for c in plan.changed] == ["B"] and plan.changed[0].threshold == 10
    assert plan.untouched == ("A",)
    assert plan.applied == plan.needs_restart == ()


def test_plan_of_the_same_file_changes_nothing(tmp_path: Path) -> None:
    text = config_text(tmp_path, {"A": "http://127.0.0.1:1/a"})
    plan = plan_reload(parsed(text), parsed(text))
    assert plan.is_noop and plan.untouched == ("A",)


def test_a_changed_default_changes_the_cameras_that_inherit_it(tmp_path: Path) -> None:
    urls = {"A": "http://127.0.0.1:1/a", "B": "http://127.0.0.1:1/b"}
    old = parsed(config_text(tmp_path, urls, per_camera={"B": "interval: 0.5"}))
    new = parsed(config_text(tmp_path, urls, interval=0.3, per_camera={"B": "interval: 0.5"}))
    plan = plan_reload(old, new)
    assert [c.id for c in plan.changed] == ["A"] and plan.untouched == ("B",)
    assert plan.applied == ()  # `defaults` is compared through the cameras only


def test_settings_fixed_at_start_wait_for_a_restart_the_rest_applies(tmp_path: Path) -> None:
    urls = {"A": "http://127.0.0.1:1/a"}
    old = parsed(config_text(tmp_path / "d1", urls))
    new = parsed(config_text(
        tmp_path / "d2", urls, grace=3,
        extra="http:\n  user_agent: other\ndedup:\n  hash: dhash\nretry:\n  down_after: 5"))
    plan = plan_reload(old, new)
    assert set(plan.needs_restart) == {"data_dir", "http.user_agent", "dedup.hash"}
    assert set(plan.applied) == {"retry.down_after", "shutdown_grace"}
    # what runs: the new applied settings, the old fixed ones
    assert plan.config.retry.down_after == 5 and plan.config.shutdown_grace == 3
    assert plan.config.data_dir == tmp_path / "d1"
    assert plan.config.http == old.http and plan.config.dedup == old.dedup


# --- the daemon ------------------------------------------------------------------------------


class Running:
    """A daemon whose config file the test rewrites, reloading as SIGHUP does."""

    def __init__(self, tmp_path: Path, sim: CriterSimulator) -> None:
        self.sim = sim
        self.data = tmp_path / "data"
        self.path = tmp_path / "cameras.yaml"

    def write(self, ids: list[str], **kw: object) -> None:
        text = config_text(self.data, {i: self.sim.url(i) for i in ids}, **kw)  # type: ignore[arg-type]
        self.path.write_text(text)

    async def start(self, ids: list[str], **kw: object) -> Daemon:
        self.write(ids, **kw)
        self.daemon = Daemon(load_checked(self.path, context=FAST),
                             reload_config=lambda: load_checked(self.path, context=FAST))
        self.task = asyncio.create_task(self.daemon.run())
        # Polling the outcome the test waits for: the daemon exposes no event for it.
        while self.daemon.registry is None or len(self.daemon.registry) < len(ids):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        return self.daemon

    async def stop(self) -> None:
        self.daemon.request_stop()
        assert await asyncio.wait_for(self.task, 15) == 0

    def stored(self, cam: str) -> list[Path]:
        return stored_frames(self.data, cam)

    async def until_stored(self, cam: str, count: int) -> None:
        while len(self.stored(cam)) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_reload_adds_a_camera_and_leaves_the_others_running(tmp_path: Path) -> None:
    async with CriterSimulator(camera_ids(2), period=0.3) as sim:
        run = Running(tmp_path, sim)
        daemon = await run.start(["SIM001"])
        assert daemon.registry is not None
        first = daemon.registry.get("SIM001")
        run.write(["SIM001", "SIM002"])
        plan = await daemon.reload()
        assert plan is not None and [c.id for c in plan.added] == ["SIM002"]
        assert daemon.registry.get("SIM001") is first  # untouched: same task, same schedule
        await asyncio.wait_for(run.until_stored("SIM002", 2), 15)
        await run.stop()


async def test_reload_removes_a_camera_after_its_poll(tmp_path: Path) -> None:
    async with CriterSimulator(camera_ids(2), period=0.3) as sim:
        run = Running(tmp_path, sim)
        daemon = await run.start(["SIM001", "SIM002"])
        await asyncio.wait_for(run.until_stored("SIM002", 1), 15)
        run.write(["SIM001"])
        plan = await daemon.reload()
        assert plan is not None and plan.removed == ("SIM002",)
        assert daemon.registry is not None and "SIM002" not in daemon.registry
        requests = sim.stats["SIM002"].requests
        stored = len(run.stored("SIM002"))
        await asyncio.wait_for(run.until_stored("SIM001", len(run.stored("SIM001")) + 2), 15)
        assert sim.stats["SIM002"].requests == requests  # no more polls ...
        assert len(run.stored("SIM002")) == stored  # ... and what it stored stays
        assert "SIM002" not in daemon.health()["cameras"]
        await run.stop()


async def test_a_changed_camera_keeps_its_memory_when_its_url_is_the_same(
    tmp_path: Path,
) -> None:
    async with CriterSimulator(camera_ids(2), period=0.3) as sim:
        run = Running(tmp_path, sim)
        daemon = await run.start(["SIM001", "SIM002"])
        await asyncio.wait_for(run.until_stored("SIM001", 1), 15)
        await asyncio.wait_for(run.until_stored("SIM002", 1), 15)
        assert daemon.registry is not None
        before = {c: daemon.registry.get(c) for c in ("SIM001", "SIM002")}
        # SIM001: new threshold, same URL; SIM002: same id, another camera's URL
        text = config_text(run.data, {"SIM001": sim.url("SIM001"), "SIM002": sim.url("SIM001")},
                           per_camera={"SIM001": "threshold: 63"})
        run.path.write_text(text)
        plan = await daemon.reload()
        assert plan is not None and {c.id for c in plan.changed} == {"SIM001", "SIM002"}
        after = {c: daemon.registry.get(c) for c in ("SIM001", "SIM002")}
        assert after["SIM001"] is not before["SIM001"]
        assert after["SIM001"].camera.threshold == 63  # type: ignore[union-attr]
        assert after["SIM001"].last is before["SIM001"].last  # type: ignore[union-attr]
        assert after["SIM002"].last is None  # type: ignore[union-attr]
        await run.stop()


async def test_an_invalid_file_is_refused_with_checks_lines_and_capture_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    async with CriterSimulator(camera_ids(1), period=0.3) as sim:
        run = Running(tmp_path, sim)
        daemon = await run.start(["SIM001"])
        running = daemon.config
        run.path.write_text(run.path.read_text().replace("interval: 0.2", "intervall: 0.2"))
        with capture_logs() as logs:
            assert await daemon.reload() is None
        errors = [e["error"] for e in logs if e["event"].startswith("reload refused")]
        capsys.readouterr()
        assert main(["check", "--config", str(run.path)]) == 2
        assert [f"error: {e}" for e in errors] == capsys.readouterr().err.splitlines()
        assert "intervall: unknown key" in errors[0]
        assert daemon.config is running
        count = len(run.stored("SIM001"))
        await asyncio.wait_for(run.until_stored("SIM001", count + 2), 15)
        await run.stop()


async def test_a_new_camera_with_an_unloadable_mask_refuses_the_reload(tmp_path: Path) -> None:
    async with CriterSimulator(camera_ids(2), period=0.3) as sim:
        run = Running(tmp_path, sim)
        daemon = await run.start(["SIM001"])
        (tmp_path / "mask.png").write_bytes(b"not a png")
        run.write(["SIM001", "SIM002"], per_camera={"SIM002": f"mask: {tmp_path / 'mask.png'}"})
        with capture_logs() as logs:
            assert await daemon.reload() is None
        [error] = [e["error"] for e in logs if e["event"].startswith("reload refused")]
        assert error.startswith(f"{run.path}: ") and "SIM002" in error and "mask" in error
        assert daemon.registry is not None and "SIM002" not in daemon.registry
        await run.stop()


async def test_a_setting_fixed_at_start_is_reported_and_kept(tmp_path: Path) -> None:
    async with CriterSimulator(camera_ids(1), period=0.3) as sim:
        run = Running(tmp_path, sim)
        daemon = await run.start(["SIM001"])
        run.path.write_text(run.path.read_text().replace(str(run.data), str(tmp_path / "other")))
        with capture_logs() as logs:
            plan = await daemon.reload()
        assert plan is not None and plan.needs_restart == ("data_dir",)
        [line] = [e for e in logs if e["event"] == "reloaded"]
        assert line["needs_restart"] == ["data_dir"] and line["log_level"] == "warning"
        count = len(run.stored("SIM001"))
        await asyncio.wait_for(run.until_stored("SIM001", count + 1), 15)
        assert not (tmp_path / "other").exists()
        await run.stop()


async def test_sighup_reloads(tmp_path: Path) -> None:
    async with CriterSimulator(camera_ids(2), period=0.3) as sim:
        run = Running(tmp_path, sim)
        daemon = await run.start(["SIM001"])
        run.write(["SIM001", "SIM002"])
        os.kill(os.getpid(), signal.SIGHUP)  # the daemon's handler on this loop takes it
        await asyncio.wait_for(run.until_stored("SIM002", 1), 15)
        assert daemon.registry is not None and "SIM002" in daemon.registry
        await run.stop()


async def test_reloads_during_heavy_writing_lose_nothing_and_store_nothing_twice(
    tmp_path: Path,
) -> None:
    """Every camera restarted (a threshold flip) again and again while frames pour in."""
    ids = camera_ids(4)
    async with CriterSimulator(ids, period=0.1) as sim:
        run = Running(tmp_path, sim)
        daemon = await run.start(ids, interval=0.05)
        await asyncio.wait_for(run.until_stored("SIM001", 2), 15)
        for n in range(8):
            threshold = 60 + n % 2
            run.write(ids, interval=0.05,
                      per_camera={i: f"threshold: {threshold}" for i in ids})
            plan = await daemon.reload()
            assert plan is not None and len(plan.changed) == 4
            await asyncio.sleep(0.2)
        await run.stop()
    for cam in ids:
        sidecars = [json.loads(f.with_suffix(".json").read_text()) for f in run.stored(cam)]
        for f, meta in zip(run.stored(cam), sidecars, strict=True):  # every frame whole
            assert hashlib.sha256(f.read_bytes()).hexdigest() == meta["sha256"]
        # In capture order. The simulator cycles through a fixed set of frames, so a frame
        # may come back later; the same frame twice in a row is what a lost memory stores.
        shas = [m["sha256"] for m in sorted(sidecars, key=lambda m: m["captured_at"])]
        assert all(a != b for a, b in itertools.pairwise(shas)), cam  # nothing stored twice
        assert set(sim.stats[cam].served_sha256) == set(shas), cam  # nothing served was lost
    leftovers = [p for p in run.data.rglob("*") if p.is_file() and p.suffix not in (".jpg", ".json")
                 and p.parent.name != ".lyoncam"]
    assert leftovers == []


def catches_sighup(pid: int) -> bool:
    """Whether the process has a handler for SIGHUP (its SigCgt mask, from /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(mask, 16) >> (signal.SIGHUP - 1) & 1)


async def test_sighup_during_start_up_is_a_reload_once_ready_never_an_exit(
    tmp_path: Path,
) -> None:
    """The handler is there before the config is read and the data_dir locked (seen in
    /proc, not guessed from time); SIGHUPs from then on, while libraries and config load:
    it starts, reloads once, and stops cleanly on SIGTERM."""
    import sys

    data = tmp_path / "data"
    async with CriterSimulator(["H1"], period=60) as sim:
        cfg = tmp_path / "cameras.yaml"
        cfg.write_text(f"data_dir: {data}\nweather:\n  enabled: false\n"
                       f"cameras:\n  - id: H1\n    url: {sim.url('H1')}\n")
        log = tmp_path / "run.log"
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "lyoncam_daemon", "run", "--config", str(cfg),
                "--log-format", "json", "--status-port", "0", stderr=err)
        try:
            for _ in range(60_000):  # a minute at most
                if catches_sighup(proc.pid) or proc.returncode is not None:
                    break
                await asyncio.sleep(0.001)
            # Python's own start-up comes first (~50 ms, before any line of lyoncam runs);
            # from the handler on, nothing of the daemon has started yet.
            assert not (data / ".lyoncam" / "lock").exists(), "SIGHUP handled only once locked"
            sent = 0
            while '"started"' not in log.read_text() and proc.returncode is None:
                proc.send_signal(signal.SIGHUP)
                sent += 1
                await asyncio.sleep(0.005)
            assert proc.returncode is None, f"exited {proc.returncode}:\n{log.read_text()}"
            for _ in range(100):
                if '"reloaded"' in log.read_text():
                    break
                await asyncio.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()
              if line.startswith("{")]
    assert sent > 10
    assert events.count("reloading: SIGHUP received during start-up") == 1
    assert "reloaded" in events
