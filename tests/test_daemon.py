"""The daemon against the simulated CriTer server on loopback: what it captures and loses."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sys
from pathlib import Path

import pytest
import structlog

from lyoncam_daemon.daemon import Daemon
from lyoncam_daemon.simulator import CriterSimulator, camera_ids, placeholder_sha256
from lyoncam_daemon.storage import Frame, StoredFrame, StoreError
from lyoncam_daemon.storage.filesystem import FilesystemStorage

from .conftest import make_config, run_for, stored_frames

SIDECAR_FIELDS = {"camera_id", "captured_at", "url", "sha256", "bytes", "width", "height",
                  "etag", "last_modified", "exif_datetime", "fingerprint", "truncated"}


async def test_every_camera_is_captured_byte_for_byte(tmp_path: Path) -> None:
    ids = camera_ids(3)
    async with CriterSimulator(ids, period=0.4) as sim:
        config = make_config(tmp_path, {i: sim.url(i) for i in ids}, interval=0.2)
        await run_for(config, 2.5)
        for cam in ids:
            frames = stored_frames(tmp_path, cam)
            assert len(frames) >= 3, cam
            served = set(sim.stats[cam].served_sha256)
            for jpg in frames:
                data = jpg.read_bytes()
                meta = json.loads(jpg.with_suffix(".json").read_text())
                assert meta.keys() >= SIDECAR_FIELDS
                assert meta["sha256"] == hashlib.sha256(data).hexdigest()
                assert meta["sha256"] in served  # the bytes exactly as served
                assert meta["bytes"] == len(data)
                assert (meta["width"], meta["height"]) == (1920, 1080)
                assert meta["camera_id"] == cam and meta["url"] == sim.url(cam)
                assert meta["captured_at"].endswith("Z")
                stamp = meta["captured_at"][:19].replace("-", "").replace(":", "")
                assert jpg.name.startswith(f"{cam}_{stamp}Z")
                assert jpg.parent == tmp_path / cam / stamp[:4] / stamp[4:6] / stamp[6:8]
                assert meta["fingerprint"]["hex"]
            # no two stored frames of a camera are the same bytes
            assert len({f.read_bytes() for f in frames}) == len(frames)


async def test_failure_modes_are_skipped_and_counted_while_healthy_cameras_keep_rate(
    tmp_path: Path,
) -> None:
    modes = {"SIM001": "ok", "SIM002": "ok", "SIM003": "placeholder", "SIM004": "truncated",
             "SIM005": "error", "SIM006": "html", "SIM007": "empty", "SIM008": "oversized",
             "SIM009": "slow", "SIM010": "reset", "SIM011": "notfound"}
    # no ETag: the content checks, not 304s, must catch every repeat
    async with CriterSimulator(list(modes), period=0.3, modes=modes, slow_seconds=3,
                               oversize_bytes=3_000_000, etag=False) as sim:
        sha = placeholder_sha256()
        config = make_config(
            tmp_path, {i: sim.url(i) for i in modes}, interval=0.25, timeout=0.8,
            extra=f"placeholder_sha256: [{sha}]\nhttp:\n  max_frame_bytes: 1MB",
        )
        with structlog.testing.capture_logs() as logs:
            daemon = await run_for(config, 3.0)
    cams = daemon.stats.cameras
    for healthy in ("SIM001", "SIM002"):
        assert cams[healthy].polls >= 9, cams[healthy]  # ~12 expected at 0.25 s over 3 s
        assert cams[healthy].outcomes["stored"] >= 5
        assert cams[healthy].state == "ok"
    expected_outcome = {"SIM003": "placeholder", "SIM004": "truncated", "SIM006": "not_image",
                        "SIM007": "not_image"}
    for cam, outcome in expected_outcome.items():
        assert cams[cam].outcomes[outcome] >= 3, (cam, cams[cam])
        assert cams[cam].condition == outcome
    hints = {e["camera"]: e.get("hint") for e in logs if e["event"] == "camera condition"}
    assert all(hints[cam] for cam in expected_outcome), hints
    expected_error = {"SIM005": "http", "SIM008": "too_large", "SIM009": "timeout",
                      "SIM010": "connection", "SIM011": "http"}
    for cam, kind in expected_error.items():
        assert cams[cam].errors[kind] >= 1, (cam, cams[cam])
        assert cams[cam].state in ("failing", "down")
    for cam in [*expected_outcome, *expected_error]:
        assert stored_frames(tmp_path, cam) == [], cam
        assert cams[cam].outcomes["stored"] == 0


async def test_truncated_keep_policy_stores_flagged_frames(tmp_path: Path) -> None:
    async with CriterSimulator(["TRUNC"], period=0.3, modes={"TRUNC": "truncated"}) as sim:
        config = make_config(tmp_path, {"TRUNC": sim.url("TRUNC")},
                             per_camera={"TRUNC": "truncated: keep"})
        await run_for(config, 1.2)
    frames = stored_frames(tmp_path, "TRUNC")
    assert frames
    assert json.loads(frames[0].with_suffix(".json").read_text())["truncated"] is True


async def test_etag_gives_304_counted_as_unchanged(tmp_path: Path) -> None:
    async with CriterSimulator(["E1"], period=30, etag=True) as sim:
        config = make_config(tmp_path, {"E1": sim.url("E1")}, interval=0.1)
        daemon = await run_for(config, 1.0)
        assert sim.stats["E1"].not_modified_304 >= 3
    cam = daemon.stats.cameras["E1"]
    assert cam.outcomes["stored"] == 1
    assert cam.outcomes["unchanged"] == sim.stats["E1"].not_modified_304


async def test_without_etag_identical_bytes_are_unchanged(tmp_path: Path) -> None:
    async with CriterSimulator(["N1"], period=30, etag=False) as sim:
        config = make_config(tmp_path, {"N1": sim.url("N1")}, interval=0.1)
        daemon = await run_for(config, 1.0)
        assert sim.stats["N1"].not_modified_304 == 0
    cam = daemon.stats.cameras["N1"]
    assert cam.outcomes["stored"] == 1 and cam.outcomes["unchanged"] >= 3


async def test_a_slow_camera_does_not_delay_the_others(tmp_path: Path) -> None:
    ids = ["FAST1", "FAST2", "SLOW"]
    async with CriterSimulator(ids, period=0.2, modes={"SLOW": "slow"}, slow_seconds=5) as sim:
        config = make_config(tmp_path, {i: sim.url(i) for i in ids}, interval=0.2, timeout=2,
                             extra="http:\n  max_concurrent: 2\n  max_per_host: 2")
        daemon = await run_for(config, 3.0)
    for fast in ("FAST1", "FAST2"):
        # 15 ticks in 3 s; allow for start-up and a loaded CI machine
        assert daemon.stats.cameras[fast].polls >= 11, daemon.stats.cameras[fast]
    assert daemon.stats.cameras["SLOW"].errors["timeout"] >= 1


async def test_restart_recovers_the_last_frame_and_stores_no_duplicate(tmp_path: Path) -> None:
    async with CriterSimulator(["R1"], period=60, etag=False) as sim:
        config = make_config(tmp_path, {"R1": sim.url("R1")}, interval=0.1)
        await run_for(config, 0.6)
        assert len(stored_frames(tmp_path, "R1")) == 1
        daemon = await run_for(config, 0.6)
    assert len(stored_frames(tmp_path, "R1")) == 1
    assert daemon.stats.cameras["R1"].outcomes["stored"] == 0
    assert daemon.stats.cameras["R1"].outcomes["unchanged"] >= 2


async def test_cancelling_mid_write_leaves_no_partial_file(tmp_path: Path) -> None:
    ids = camera_ids(4)
    async with CriterSimulator(ids, period=0.1) as sim:
        config = make_config(tmp_path, {i: sim.url(i) for i in ids}, interval=0.1)
        for delay in (0.35, 0.52, 0.71, 0.9):
            daemon = Daemon(config)
            task = asyncio.create_task(daemon.run())
            await asyncio.sleep(delay)
            task.cancel()  # harsher than SIGTERM: no grace at all
            with pytest.raises(asyncio.CancelledError):
                await task
    await asyncio.sleep(0.3)  # let writer threads that were mid-write finish
    files = [p for p in tmp_path.rglob("*") if p.is_file() and ".lyoncam" not in p.parts]
    assert files, "nothing was captured"
    for p in files:
        assert not p.name.startswith("."), f"temp file left: {p}"
        if p.suffix == ".jpg":
            meta = json.loads(p.with_suffix(".json").read_text())
            assert hashlib.sha256(p.read_bytes()).hexdigest() == meta["sha256"]
        else:
            assert p.suffix == ".json" and p.with_suffix(".jpg").exists()


async def test_write_errors_are_counted_and_the_camera_keeps_polling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = FilesystemStorage.write
    failures = {"left": 3}

    def flaky_write(self: FilesystemStorage, frame: Frame) -> StoredFrame:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise StoreError("cannot write frame of W1 under /x: No space left on device")
        return real_write(self, frame)

    monkeypatch.setattr(FilesystemStorage, "write", flaky_write)
    async with CriterSimulator(["W1"], period=0.2) as sim:
        config = make_config(tmp_path, {"W1": sim.url("W1")}, interval=0.2)
        with structlog.testing.capture_logs() as logs:
            daemon = await run_for(config, 2.0)
    cam = daemon.stats.cameras["W1"]
    assert cam.write_errors == 3
    assert cam.outcomes["stored"] >= 2
    assert [e["event"] for e in logs].count("write failed") == 1  # logged once, not per poll
    assert "writes recovered" in [e["event"] for e in logs]


async def test_a_failing_camera_logs_state_changes_once_not_every_poll(tmp_path: Path) -> None:
    async with CriterSimulator(["BAD", "GOOD"], period=0.2, modes={"BAD": "error"}) as sim:
        config = make_config(tmp_path, {"BAD": sim.url("BAD"), "GOOD": sim.url("GOOD")},
                             interval=0.1)
        with structlog.testing.capture_logs() as logs:
            daemon = await run_for(config, 2.5)
        sim.set_mode("BAD", "ok")
    bad = daemon.stats.cameras["BAD"]
    assert bad.errors["http"] >= 4 and bad.state == "down"
    changes = [(e["state"], e["previous"]) for e in logs
               if e["event"] == "camera state" and e.get("camera") == "BAD"]
    assert changes == [("failing", "starting"), ("down", "failing")]
    # backoff: far fewer polls than the 25 a healthy camera gets
    assert bad.polls < daemon.stats.cameras["GOOD"].polls / 2


async def test_a_down_camera_recovers_by_itself(tmp_path: Path) -> None:
    async with CriterSimulator(["FLAKY"], period=0.2, modes={"FLAKY": "error"}) as sim:
        config = make_config(tmp_path, {"FLAKY": sim.url("FLAKY")}, interval=0.1)
        daemon = Daemon(config)
        task = asyncio.create_task(daemon.run())
        await asyncio.sleep(1.5)
        assert daemon.stats.cameras["FLAKY"].state == "down"
        sim.set_mode("FLAKY", "ok")
        await asyncio.sleep(1.2)
        daemon.request_stop()
        assert await task == 0
    assert daemon.stats.cameras["FLAKY"].state == "ok"
    assert stored_frames(tmp_path, "FLAKY")


async def test_sigterm_stops_the_daemon_with_exit_0(tmp_path: Path) -> None:
    async with CriterSimulator(["SIG1", "SIG2"], period=60) as sim:
        cfg = tmp_path / "cameras.yaml"
        cfg.write_text(
            f"data_dir: {tmp_path / 'data'}\ncameras:\n"
            f"  - id: SIG1\n    url: {sim.url('SIG1')}\n"
            f"  - id: SIG2\n    url: {sim.url('SIG2')}\n"
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lyoncam_daemon", "run", "--config", str(cfg),
            "--status-port", "0",
            "--log-format", "json", stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert proc.stderr is not None
        for _ in range(200):
            if stored_frames(tmp_path / "data", "SIG1"):
                break
            await asyncio.sleep(0.1)
        assert stored_frames(tmp_path / "data", "SIG1"), "nothing captured before SIGTERM"
        proc.send_signal(signal.SIGTERM)
        err = await asyncio.wait_for(proc.stderr.read(), timeout=30)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
    events = [json.loads(line)["event"] for line in err.decode().splitlines() if line.strip()]
    assert events[0] == "started" and events[-1] == "stopped"
    health = json.loads((tmp_path / "data" / ".lyoncam" / "health.json").read_text())
    assert health["stopping"] is True and health["totals"]["stored"] >= 1
    assert set(health["cameras"]) == {"SIG1", "SIG2"}
    assert health["totals"]["cameras"] == 2


async def test_a_second_daemon_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    from lyoncam_daemon.daemon import StartupError

    async with CriterSimulator(["L1"], period=60) as sim:
        config = make_config(tmp_path, {"L1": sim.url("L1")}, interval=1)
        first = Daemon(config)
        task = asyncio.create_task(first.run())
        await asyncio.sleep(0.3)
        with pytest.raises(StartupError,
                           match=rf"another lyoncam daemon \(pid {os.getpid()}\) is using it"):
            await Daemon(config).run()
        first.request_stop()
        assert await task == 0


async def test_a_frozen_camera_is_reported_stale_once_and_recovers(tmp_path: Path) -> None:
    async with CriterSimulator(["FRZ"], period=1.5, etag=False) as sim:
        config = make_config(tmp_path, {"FRZ": sim.url("FRZ")}, interval=0.1,
                             per_camera={"FRZ": "stale_after: 4"})
        with structlog.testing.capture_logs() as logs:
            await run_for(config, 2.6)
    changes = [e["condition"] for e in logs
               if e["event"] == "camera condition" and e.get("camera") == "FRZ"]
    # frame stored at start, frozen for 1.5 s (stale once), a new frame (normal again), ...
    assert changes[:2] == ["stale", "normal"]
    assert len(changes) <= 4


async def test_a_truncating_camera_is_logged_once_with_the_policy_hint(tmp_path: Path) -> None:
    async with CriterSimulator(["CUT"], period=0.2, modes={"CUT": "truncated"},
                               etag=False) as sim:
        config = make_config(tmp_path, {"CUT": sim.url("CUT")}, interval=0.1)
        with structlog.testing.capture_logs() as logs:
            daemon = await run_for(config, 1.2)
    notes = [e for e in logs if e["event"] == "camera condition"]
    assert len(notes) == 1 and notes[0]["condition"] == "truncated"
    assert "truncated: keep" in notes[0]["hint"]
    assert daemon.stats.cameras["CUT"].outcomes["truncated"] >= 8


def test_an_unusable_data_dir_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lyoncam_daemon.daemon import run_daemon

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    config = make_config(blocker / "data", {"A": "http://127.0.0.1:9/a.jpg"}, interval=1)
    assert run_daemon(config) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: data_dir {blocker / 'data'}: Not a directory"
    assert blocker.read_text() == "x"


def test_a_broken_mask_image_stops_start_up_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lyoncam_daemon.daemon import run_daemon

    mask = tmp_path / "mask.png"
    mask.write_text("not an image")
    config = make_config(tmp_path, {"M1": "http://127.0.0.1:9/m.jpg"}, interval=1,
                         per_camera={"M1": f"mask: {mask}"})
    assert run_daemon(config) == 2  # unusable settings, as `check` says
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: dedup settings: camera 'M1': mask image ")
    assert str(mask) in err and "\n" not in err


async def test_a_crashing_poll_is_logged_once_and_the_camera_keeps_going(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lyoncam_daemon.dedup import Judge

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug in a check")

    monkeypatch.setattr(Judge, "judge", broken)
    async with CriterSimulator(["BUG"], period=0.2, etag=False) as sim:
        config = make_config(tmp_path, {"BUG": sim.url("BUG")}, interval=0.1)
        with structlog.testing.capture_logs() as logs:
            daemon = await run_for(config, 1.0)
    cam = daemon.stats.cameras["BUG"]
    assert cam.polls >= 7 and cam.errors["internal"] == cam.polls
    assert [e["event"] for e in logs].count("poll crashed") == 1


async def test_a_camera_task_that_dies_is_restarted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lyoncam_daemon.camera as camera_module

    real_next_due = camera_module.next_due
    calls = {"n": 0}

    def flaky_next_due(prev: float, interval: float, now: float) -> float:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ValueError("schedule bug")
        return real_next_due(prev, interval, now)

    monkeypatch.setattr(camera_module, "next_due", flaky_next_due)
    async with CriterSimulator(["DIE"], period=0.2, etag=False) as sim:
        config = make_config(tmp_path, {"DIE": sim.url("DIE")}, interval=0.1)
        with structlog.testing.capture_logs() as logs:
            daemon = await run_for(config, 1.2)
    assert [e["event"] for e in logs].count("camera task crashed; restarting") == 1
    assert daemon.stats.cameras["DIE"].polls >= 6


async def test_a_refused_second_daemon_keeps_the_first_ones_pid(tmp_path: Path) -> None:
    from lyoncam_daemon.daemon import StartupError

    async with CriterSimulator(["P1"], period=60) as sim:
        config = make_config(tmp_path, {"P1": sim.url("P1")}, interval=1)
        first = Daemon(config)
        task = asyncio.create_task(first.run())
        await asyncio.sleep(0.3)
        with pytest.raises(StartupError):
            await Daemon(config).run()
        assert (tmp_path / ".lyoncam" / "lock").read_text() == f"{os.getpid()}\n"
        first.request_stop()
        assert await task == 0


def test_run_refuses_a_config_with_no_enabled_camera(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lyoncam_daemon.cli import main

    cfg = tmp_path / "cameras.yaml"
    cfg.write_text("cameras:\n  - id: A\n    url: http://127.0.0.1:9/a\n    enabled: false\n")
    assert main(["run", "--config", str(cfg)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {cfg}: no enabled camera to capture"


@pytest.mark.parametrize("gap", [0.0, 0.005, 0.02, 0.1])
async def test_two_quick_signals_still_exit_0_with_a_stopped_line(
    tmp_path: Path, gap: float
) -> None:
    # GNU timeout signals both the child and its process group: two signals in a row.
    async with CriterSimulator(["TWO"], period=60) as sim:
        cfg = tmp_path / "cameras.yaml"
        cfg.write_text(f"data_dir: {tmp_path / 'data'}\ncameras:\n"
                       f"  - id: TWO\n    url: {sim.url('TWO')}\n")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lyoncam_daemon", "run", "--config", str(cfg),
            "--status-port", "0",
            "--log-format", "json", stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stderr is not None
        for _ in range(200):
            if stored_frames(tmp_path / "data", "TWO"):
                break
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        await asyncio.sleep(gap)
        with contextlib.suppress(ProcessLookupError):  # it may be gone already
            proc.send_signal(signal.SIGINT)
        err = await asyncio.wait_for(proc.stderr.read(), timeout=30)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0, err.decode()[-500:]
    assert json.loads(err.decode().splitlines()[-1])["event"] == "stopped"


async def test_slow_decoding_never_stalls_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from lyoncam_daemon.dedup import Judge

    real_look = Judge.look

    def slow_look(self: Judge, data: bytes, mask: object) -> object:
        time.sleep(0.25)  # a decode far slower than a real one, holding a worker thread
        return real_look(self, data, mask)  # type: ignore[arg-type]

    monkeypatch.setattr(Judge, "look", slow_look)
    ids = camera_ids(6)
    lags: list[float] = []

    async def ticker() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - before - 0.01)

    async with CriterSimulator(ids, period=0.2, etag=False) as sim:
        config = make_config(tmp_path, {i: sim.url(i) for i in ids}, interval=0.2,
                             extra="dedup:\n  workers: 1")
        probe = asyncio.create_task(ticker())
        daemon = await run_for(config, 2.0)
        probe.cancel()
    assert sum(c.outcomes["stored"] for c in daemon.stats.cameras.values()) >= 4
    # decoding waits in the one-thread pool; the loop itself never stops for it
    assert max(lags) < 0.15, max(lags)


async def test_slow_cameras_never_starve_healthy_ones_on_the_same_host(tmp_path: Path) -> None:
    """4 slow and 6 healthy cameras on one host, default max_per_host 4: healthy ones keep
    every frame, and the slow ones fail with their own timeout, nobody else's."""
    import time

    ids = camera_ids(10)
    slow, healthy = ids[:4], ids[4:]
    interval, timeout, period, run_s = 0.25, 1.5, 0.6, 8.0
    async with CriterSimulator(ids, period=period, modes=dict.fromkeys(slow, "slow"),
                               slow_seconds=30, etag=False) as sim:
        config = make_config(tmp_path, {i: sim.url(i) for i in ids}, interval=interval,
                             timeout=timeout)
        assert config.http.max_per_host == 4
        started = time.monotonic()
        daemon = await run_for(config, run_s)
        stopped = started + run_s
        # Frames published after the slow cameras' first timeout (until then nobody knows
        # they are slow, and they may hold every slot once) and at least one interval plus
        # slack before the stop: each of those must be kept.
        window = (started + timeout + interval + 0.1, stopped - interval - 0.3)
        expected = {c: sim.tick(c, window[1]) - sim.tick(c, window[0]) + 1 for c in healthy}
    kept = {c: min(len(stored_frames(tmp_path, c)), expected[c]) for c in healthy}
    assert sum(kept.values()) / sum(expected.values()) >= 0.99, (kept, expected)
    cams = daemon.stats.cameras
    for c in healthy:
        assert not cams[c].errors, (c, cams[c].errors)
    for c in slow:
        assert cams[c].errors["timeout"] >= 1 and set(cams[c].errors) == {"timeout"}
