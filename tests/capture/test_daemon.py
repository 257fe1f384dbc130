"""The daemon against the simulated CriTer server on loopback: what it captures and loses."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import itertools
import json
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import structlog

from lyoncam_daemon.capture.daemon import GC_YOUNG_THRESHOLD, START_STEP, Daemon, settle_gc
from lyoncam_daemon.devtools.simulator import CriterSimulator, camera_ids, placeholder_sha256
from lyoncam_daemon.observe.stats import SNAPSHOT_STEP, CameraStats
from lyoncam_daemon.storage import Frame, StoredFrame, StoreError
from lyoncam_daemon.storage.filesystem import FilesystemStorage
from tests.conftest import make_config, run_until, stored_frames, until

SIDECAR_FIELDS = {"camera_id", "captured_at", "url", "sha256", "bytes", "width", "height",
                  "etag", "last_modified", "exif_datetime", "fingerprint", "truncated"}


async def test_every_camera_is_captured_byte_for_byte(tmp_path: Path) -> None:
    ids = camera_ids(3)
    async with CriterSimulator(ids, period=0.4) as sim:
        config = make_config(tmp_path, {i: sim.url(i) for i in ids}, interval=0.2)
        await run_until(config, lambda d: all(
            d.stats.camera(i).outcomes["stored"] >= 3 for i in ids), "3 frames each")
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
        expected_outcome = {"SIM003": "placeholder", "SIM004": "truncated",
                            "SIM006": "not_image", "SIM007": "not_image"}
        expected_error = {"SIM005": "http", "SIM008": "too_large", "SIM009": "timeout",
                          "SIM010": "connection", "SIM011": "http"}

        def seen_everything(d: Daemon) -> bool:
            c = d.stats.camera
            return (all(c(h).outcomes["stored"] >= 5 for h in ("SIM001", "SIM002"))
                    and all(c(k).outcomes[o] >= 3 for k, o in expected_outcome.items())
                    and all(c(k).errors[e] >= 1 for k, e in expected_error.items()))

        with structlog.testing.capture_logs() as logs:
            daemon = await run_until(config, seen_everything, "every mode counted")
    cams = daemon.stats.cameras
    for healthy in ("SIM001", "SIM002"):
        assert cams[healthy].state == "ok" and not cams[healthy].errors
    for cam, outcome in expected_outcome.items():
        assert cams[cam].outcomes[outcome] >= 3, (cam, cams[cam])
        assert cams[cam].condition == outcome
    hints = {e["camera"]: e.get("hint") for e in logs if e["event"] == "camera condition"}
    assert all(hints[cam] for cam in expected_outcome), hints
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
        await run_until(config, lambda d: d.stats.camera("TRUNC").outcomes["stored"] >= 1,
                        "a frame stored")
    frames = stored_frames(tmp_path, "TRUNC")
    assert frames
    assert json.loads(frames[0].with_suffix(".json").read_text())["truncated"] is True


async def test_etag_gives_304_counted_as_unchanged(tmp_path: Path) -> None:
    async with CriterSimulator(["E1"], period=30, etag=True) as sim:
        config = make_config(tmp_path, {"E1": sim.url("E1")}, interval=0.1)
        daemon = await run_until(config, lambda d: sim.stats["E1"].not_modified_304 >= 3,
                                 "three 304s")
    cam = daemon.stats.cameras["E1"]
    assert cam.outcomes["stored"] == 1
    assert cam.outcomes["unchanged"] == sim.stats["E1"].not_modified_304


async def test_without_etag_identical_bytes_are_unchanged(tmp_path: Path) -> None:
    async with CriterSimulator(["N1"], period=30, etag=False) as sim:
        config = make_config(tmp_path, {"N1": sim.url("N1")}, interval=0.1)
        daemon = await run_until(
            config, lambda d: d.stats.camera("N1").outcomes["unchanged"] >= 3, "3 repeats")
        assert sim.stats["N1"].not_modified_304 == 0
    cam = daemon.stats.cameras["N1"]
    assert cam.outcomes["stored"] == 1 and cam.outcomes["unchanged"] >= 3


async def test_restart_recovers_the_last_frame_and_stores_no_duplicate(tmp_path: Path) -> None:
    async with CriterSimulator(["R1"], period=60, etag=False) as sim:
        config = make_config(tmp_path, {"R1": sim.url("R1")}, interval=0.1)
        await run_until(config, lambda d: d.stats.camera("R1").polls >= 3, "3 polls")
        assert len(stored_frames(tmp_path, "R1")) == 1
        daemon = await run_until(
            config, lambda d: d.stats.camera("R1").outcomes["unchanged"] >= 2, "2 repeats")
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
            daemon = await run_until(
                config, lambda d: d.stats.camera("W1").outcomes["stored"] >= 2, "recovery")
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
            # down, then a few probes at down_probe_interval while GOOD polls on
            daemon = await run_until(config, lambda d: d.stats.camera("BAD").state == "down"
                                     and d.stats.camera("BAD").errors["http"] >= 4
                                     and d.stats.camera("GOOD").polls >= 20,
                                     "BAD down after 4 failures, 20 polls of GOOD")
        sim.set_mode("BAD", "ok")
    bad = daemon.stats.cameras["BAD"]
    assert bad.errors["http"] >= 4 and bad.state == "down"
    changes = [(e["state"], e["previous"]) for e in logs
               if e["event"] == "camera state" and e.get("camera") == "BAD"]
    assert changes == [("failing", "starting"), ("down", "failing")]
    # backoff: far fewer polls than a healthy camera gets
    assert bad.polls < daemon.stats.cameras["GOOD"].polls / 2


async def test_a_down_camera_recovers_by_itself(tmp_path: Path) -> None:
    async with CriterSimulator(["FLAKY"], period=0.2, modes={"FLAKY": "error"}) as sim:
        config = make_config(tmp_path, {"FLAKY": sim.url("FLAKY")}, interval=0.1)
        daemon = Daemon(config)
        task = asyncio.create_task(daemon.run())
        cam = daemon.stats.camera("FLAKY")
        await until(lambda: cam.state == "down", "FLAKY down")
        sim.set_mode("FLAKY", "ok")
        await until(lambda: cam.state == "ok" and cam.outcomes["stored"] >= 1,
                    "FLAKY ok again, a frame stored")
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
    from lyoncam_daemon.capture.daemon import StartupError

    async with CriterSimulator(["L1"], period=60) as sim:
        config = make_config(tmp_path, {"L1": sim.url("L1")}, interval=1)
        first = Daemon(config)
        task = asyncio.create_task(first.run())
        await until(lambda: first.registry is not None, "the first daemon running")
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

            def changes() -> list[str]:
                return [e["condition"] for e in logs
                        if e["event"] == "camera condition" and e.get("camera") == "FRZ"]

            daemon = await run_until(
                config, lambda d: len(changes()) >= 2 and d.stats.camera("FRZ").polls >= 30,
                "stale, then normal again, and 30 polls")
    seen = changes()
    # frame stored at start, frozen for 1.5 s (stale once), a new frame (normal again), ...
    assert seen[:2] == ["stale", "normal"]
    # once per freeze, not once per poll: no more stale reports than frames stored
    assert seen.count("stale") <= daemon.stats.cameras["FRZ"].outcomes["stored"]


async def test_a_truncating_camera_is_logged_once_with_the_policy_hint(tmp_path: Path) -> None:
    async with CriterSimulator(["CUT"], period=0.2, modes={"CUT": "truncated"},
                               etag=False) as sim:
        config = make_config(tmp_path, {"CUT": sim.url("CUT")}, interval=0.1)
        with structlog.testing.capture_logs() as logs:
            daemon = await run_until(
                config, lambda d: d.stats.camera("CUT").outcomes["truncated"] >= 8, "8 cuts")
    notes = [e for e in logs if e["event"] == "camera condition"]
    assert len(notes) == 1 and notes[0]["condition"] == "truncated"
    assert "truncated: keep" in notes[0]["hint"]
    assert daemon.stats.cameras["CUT"].outcomes["truncated"] >= 8


def test_an_unusable_data_dir_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lyoncam_daemon.capture.daemon import run_daemon

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
    from lyoncam_daemon.capture.daemon import run_daemon

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
    from lyoncam_daemon.frames.judge import Judge

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug in a check")

    monkeypatch.setattr(Judge, "judge", broken)
    async with CriterSimulator(["BUG"], period=0.2, etag=False) as sim:
        config = make_config(tmp_path, {"BUG": sim.url("BUG")}, interval=0.1)
        with structlog.testing.capture_logs() as logs:
            daemon = await run_until(config, lambda d: d.stats.camera("BUG").polls >= 7,
                                     "7 polls")
    cam = daemon.stats.cameras["BUG"]
    assert cam.polls >= 7 and cam.errors["internal"] == cam.polls
    assert [e["event"] for e in logs].count("poll crashed") == 1


async def test_a_camera_task_that_dies_is_restarted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lyoncam_daemon.capture.camera as camera_module

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
            daemon = await run_until(config, lambda d: d.stats.camera("DIE").polls >= 6,
                                     "polls after the restart")
    assert [e["event"] for e in logs].count("camera task crashed; restarting") == 1
    assert daemon.stats.cameras["DIE"].polls >= 6


async def test_a_refused_second_daemon_keeps_the_first_ones_pid(tmp_path: Path) -> None:
    from lyoncam_daemon.capture.daemon import StartupError

    async with CriterSimulator(["P1"], period=60) as sim:
        config = make_config(tmp_path, {"P1": sim.url("P1")}, interval=1)
        first = Daemon(config)
        task = asyncio.create_task(first.run())
        await until(lambda: first.registry is not None, "the first daemon running")
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
        # os.kill, not proc.send_signal: Popen.send_signal polls first, and that poll reaps a
        # daemon that already exited, under asyncio's child watcher, which then reports 255.
        os.kill(proc.pid, signal.SIGINT)
        await asyncio.sleep(gap)
        with contextlib.suppress(ProcessLookupError):  # it may be gone already
            os.kill(proc.pid, signal.SIGINT)
        err = await asyncio.wait_for(proc.stderr.read(), timeout=30)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0, err.decode()[-500:]
    assert json.loads(err.decode().splitlines()[-1])["event"] == "stopped"


async def test_slow_decoding_never_stalls_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decode that does not end until the test says so: meanwhile the loop goes on, and
    the other cameras' frames are fetched, decoded in the second worker and stored. Decoding
    on the loop would stall everything until the release, and the test would fail waiting
    for those frames. No clock involved."""
    from lyoncam_daemon.frames.judge import Judge

    real_look = Judge.look
    decode_threads: set[int] = set()
    held, release = threading.Event(), threading.Event()

    def held_look(self: Judge, data: bytes, *rest: Any) -> object:
        decode_threads.add(threading.get_ident())
        if not held.is_set():
            held.set()
            release.wait(60)
        return real_look(self, data, *rest)

    monkeypatch.setattr(Judge, "look", held_look)
    ids = camera_ids(6)
    async with CriterSimulator(ids, period=0.2, etag=False) as sim:
        config = make_config(tmp_path, {i: sim.url(i) for i in ids}, interval=0.2,
                             extra="dedup:\n  workers: 2")
        loop_thread = threading.get_ident()
        daemon = Daemon(config)
        running = asyncio.create_task(daemon.run())

        def stored() -> int:
            return sum(c.outcomes["stored"] for c in daemon.stats.cameras.values())

        try:
            await until(held.is_set, "a decode under way")
            await until(lambda: stored() >= 6, "6 frames stored while that decode is held")
            assert not release.is_set()
        finally:
            release.set()
        daemon.request_stop()
        assert await running == 0
    # every decode ran in the worker pool, never on the event loop's thread
    assert decode_threads and loop_thread not in decode_threads


async def test_slow_cameras_never_starve_healthy_ones_on_the_same_host(tmp_path: Path) -> None:
    """4 cameras that never answer and 6 healthy ones on one host, default max_per_host 4,
    the slow ones first: from the very first round, before anything is known about them,
    every poll of a healthy camera gets a turn and stores its frame, and the slow ones fail
    with their own timeout, nobody else's."""
    ids = camera_ids(10)
    slow, healthy = ids[:4], ids[4:]
    async with CriterSimulator(ids, period=1.0, modes=dict.fromkeys(slow, "slow"),
                               slow_seconds=60, etag=False) as sim:
        config = make_config(tmp_path, {i: sim.url(i) for i in ids}, interval=2.0,
                             timeout=6.0)
        assert config.http.max_per_host == 4

        def known(d: Daemon) -> bool:  # every slow camera timed out, healthy ones went on
            return (all(d.stats.camera(c).errors["timeout"] >= 1 for c in slow)
                    and all(d.stats.camera(c).polls >= 4 for c in healthy))

        daemon = await run_until(config, known, "the slow cameras' timeouts", limit=60)
    cams = daemon.stats.cameras
    for c in healthy:
        assert cams[c].skipped == 0, (c, cams[c].skipped)  # no poll lost for want of a turn
        assert not cams[c].errors, (c, cams[c].errors)
        assert dict(cams[c].outcomes) == {"stored": cams[c].polls}, (c, cams[c].outcomes)
    for c in slow:
        assert set(cams[c].errors) == {"timeout"}


async def test_with_no_network_the_first_summary_comes_after_one_round(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on: every poll is refused
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    config = make_config(tmp_path, {c: f"{dead}/{c}.JPG" for c in ("N1", "N2", "N3")},
                         interval=0.3, timeout=0.5, summary_interval=300)
    assert config.log.summary_interval == 300
    with structlog.testing.capture_logs() as logs:
        await run_until(config, lambda d: any(e["event"] == "no camera has answered"
                                              for e in logs), "the no-answer warning")
    events = [e["event"] for e in logs]
    assert "summary" in events  # not after 300 s
    warning = next(e for e in logs if e["event"] == "no camera has answered")
    assert warning["errors"] == {"connection": 3} or warning["errors"]["connection"] >= 3
    assert "network" in warning["hint"]
    health = json.loads((tmp_path / ".lyoncam" / "health.json").read_text())
    assert {c["state"] for c in health["cameras"].values()} <= {"failing", "down"}


async def test_a_failing_camera_is_down_after_down_after_not_at_its_next_poll(
    tmp_path: Path,
) -> None:
    async with CriterSimulator(["OFF1"], period=60, modes={"OFF1": "error"}) as sim:
        config = make_config(
            tmp_path, {"OFF1": sim.url("OFF1")}, interval=0.2,
            retry={"backoff_initial": 30, "backoff_max": 60, "down_after": 0.4,
                   "down_probe_interval": 30})
        daemon = Daemon(config)
        task = asyncio.create_task(daemon.run())
        cam = daemon.stats.camera("OFF1")
        for _ in range(300):
            if cam.state == "down":
                break
            await asyncio.sleep(0.01)
        daemon.request_stop()
        assert await task == 0
    # down without a second poll: the next one was 30 s of backoff away
    assert cam.state == "down" and cam.polls == 1 and sim.stats["OFF1"].requests == 1


async def test_a_full_disk_shows_in_the_camera_condition_and_health(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(self: FilesystemStorage, frame: Frame) -> StoredFrame:
        raise StoreError(f"cannot write frame of {frame.camera_id} under /x: "
                         "No space left on device")

    monkeypatch.setattr(FilesystemStorage, "write", full)
    async with CriterSimulator(["D1", "D2"], period=0.2) as sim:
        config = make_config(tmp_path, {i: sim.url(i) for i in ("D1", "D2")}, interval=0.1)
        with structlog.testing.capture_logs() as logs:
            daemon = await run_until(config, lambda d: all(
                d.stats.camera(c).write_errors >= 3 for c in ("D1", "D2")), "3 failed writes")
    health = json.loads((tmp_path / ".lyoncam" / "health.json").read_text())
    assert health["storage"]["ok"] is False
    assert "No space left on device" in health["storage"]["error"]
    for cam in ("D1", "D2"):
        assert health["cameras"][cam]["condition"] == "write_failing"
        assert health["cameras"][cam]["state"] == "ok"  # the camera itself is fine
        assert daemon.stats.cameras[cam].write_errors >= 3
        notes = [e for e in logs if e["event"] == "camera condition" and e["camera"] == cam]
        assert [n["condition"] for n in notes] == ["write_failing"]  # once, not per frame


async def test_a_second_stop_counts_the_polls_it_cancelled(tmp_path: Path) -> None:
    ids = camera_ids(3)
    async with CriterSimulator(ids, period=60, modes=dict.fromkeys(ids, "slow"),
                               slow_seconds=30) as sim:
        config = make_config(tmp_path, {i: sim.url(i) for i in ids}, interval=0.2, timeout=20)
        daemon = Daemon(config)
        task = asyncio.create_task(daemon.run())
        for _ in range(500):
            if sum(sim.stats[i].ok_200 for i in ids) == 3:  # all three bodies dribbling
                break
            await asyncio.sleep(0.01)
        with structlog.testing.capture_logs() as logs:
            daemon.request_stop()
            daemon.request_stop()  # a second Ctrl-C: no grace
            assert await task == 0
    stopped = next(e for e in logs if e["event"] == "stopped")
    assert stopped["cancelled"] == 3


async def test_overload_skips_polls_instead_of_piling_frames_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decoding far slower than frames arrive: frames held stay bounded, polls are skipped
    (counted, logged once) and never bunched together afterwards."""
    import time

    import lyoncam_daemon.capture.camera as camera_module
    from lyoncam_daemon.capture.camera import pipeline_size
    from lyoncam_daemon.frames.judge import Judge

    real_judge = Judge.judge
    judging = {"now": 0, "most": 0}

    async def slow_judge(self: Judge, *args: Any, **kwargs: Any) -> object:
        judging["now"] += 1
        judging["most"] = max(judging["most"], judging["now"])
        try:
            await asyncio.sleep(1.0)  # a decode pool hopelessly behind
            return await real_judge(self, *args, **kwargs)
        finally:
            judging["now"] -= 1

    real_fetch = camera_module.fetch_frame
    starts: dict[str, list[float]] = {}

    async def timed_fetch(session: object, url: str, **kw: object) -> object:
        starts.setdefault(url, []).append(time.monotonic())
        return await real_fetch(session, url, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Judge, "judge", slow_judge)
    monkeypatch.setattr(camera_module, "fetch_frame", timed_fetch)
    ids = camera_ids(pipeline_size(1) + 8)  # more frames at once than the pipeline holds
    interval = 0.2
    async with CriterSimulator(ids, period=0.1, etag=False) as sim:
        config = make_config(tmp_path, {i: sim.url(i) for i in ids}, interval=interval,
                             extra="dedup:\n  workers: 1")
        with structlog.testing.capture_logs() as logs:
            daemon = await run_until(config, lambda d: d.stats.every.skipped >= 10
                                     and d.stats.every.outcomes["stored"] >= 1
                                     and sum(len(t) >= 4 for t in starts.values()) >= 4,
                                     "skipped polls, a stored frame, cameras polled 4 times")
    assert judging["most"] <= pipeline_size(1)  # frames in memory stay bounded
    totals = daemon.stats.snapshot().totals()
    assert totals["skipped"] > 0 and totals["stored"] > 0
    assert [e["event"] for e in logs].count("overloaded: skipping polls") == 1
    # what made the polls late is told apart: frames waited for the judge holding turns
    snap = daemon.stats.snapshot(cameras=False)
    assert snap.pipeline_wait_s.max >= 0.5, snap.pipeline_wait_s
    assert snap.slot_wait_s.count == daemon.stats.every.polls
    for times in starts.values():  # a late camera skips ticks, it never catches up in a burst
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps, default=interval) >= interval * 0.9, gaps


async def test_the_stopping_health_record_is_written_last_even_past_a_slow_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    daemon = Daemon(make_config(tmp_path, {"CAM": "http://127.0.0.1:9/a.jpg"}))
    write = daemon.state.write_health
    held, release = threading.Event(), threading.Event()
    begun: list[bool] = []
    ended: list[bool] = []

    def slow_first(record: dict[str, Any], cameras: list[str] | None = None) -> None:
        begun.append(record["stopping"])
        if len(begun) == 1:
            held.set()
            release.wait(10)
        write(record, cameras)
        ended.append(record["stopping"])

    monkeypatch.setattr(daemon.state, "write_health", slow_first)
    task = asyncio.create_task(daemon.run())
    await until(held.is_set, "the first health write")
    daemon.request_stop()
    # Time for a stopping write that did not wait its turn to start (and finish) first.
    with contextlib.suppress(AssertionError):
        await until(lambda: len(begun) > 1, "a write overtaking the held one", limit=1.0)
    release.set()
    assert await asyncio.wait_for(task, timeout=15) == 0
    await until(lambda: len(ended) == len(begun), "every health write to end")
    assert begun == ended == [False, True]
    assert json.loads(daemon.state.health_path.read_text())["stopping"] is True
    assert gc.get_freeze_count() == 0  # a daemon inside another process leaves gc alone


def test_settle_gc_freezes_what_lives_and_collects_young_objects_less_often() -> None:
    thresholds = gc.get_threshold()
    try:
        settle_gc()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *thresholds[1:])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


async def test_the_heartbeat_lets_cameras_run_while_it_copies_their_stats(tmp_path: Path) -> None:
    """Thousands of cameras are copied a few hundred per turn of the event loop: a camera's
    poll counted meanwhile shows in the cameras copied after it, and the totals written
    still add up over the cameras written. In one go, the loop held every poll back."""
    daemon = Daemon(make_config(tmp_path, {"CAM": "http://127.0.0.1:9/a.jpg"}))
    stats = daemon.stats
    ids = [f"C{i:05d}" for i in range(8 * SNAPSHOT_STEP)]
    for cid in ids:
        stats.camera(cid)
    first, last = stats.camera(ids[0]), stats.camera(ids[-1])
    daemon.state.path.mkdir()

    async def polls() -> None:  # another task's work, a turn of the loop at a time
        while True:
            stats.polled(first)
            stats.polled(last)
            await asyncio.sleep(0)

    heartbeat = asyncio.create_task(daemon._write_health())
    ticking = asyncio.create_task(polls())
    totals = await heartbeat
    ticking.cancel()
    record = json.loads(daemon.state.health_path.read_text())
    assert record["cameras"][ids[0]]["polls"] == 0  # copied before any other task ran
    assert record["cameras"][ids[-1]]["polls"] >= 7  # after seven turns of the loop
    assert totals["polls"] == sum(c["polls"] for c in record["cameras"].values())
    assert totals["cameras"] == len(ids)


async def test_the_first_cameras_start_while_the_rest_are_set_up(tmp_path: Path) -> None:
    """Thousands of cameras are set up a few hundred per turn of the event loop: the first
    (due at once) begin before the last is added, rather than after all of them."""
    ids = [f"C{i:04d}" for i in range(2 * START_STEP)]
    config = make_config(tmp_path, dict.fromkeys(ids, "http://127.0.0.1:9/a.jpg"),
                         interval=30.0)
    running: list[int] = []

    class Counting(FilesystemStorage):
        """The real store, noting how many cameras run when the first recovers."""

        async def recover(self, camera_id: str) -> int:
            if daemon.registry is not None:
                running.append(len(daemon.registry))
            return await super().recover(camera_id)

    daemon = Daemon(config, storage=Counting(tmp_path))
    task = asyncio.create_task(daemon.run())
    try:
        await until(lambda: len(running) >= len(ids), "every camera's recovery")
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, timeout=15) == 0
    assert running[0] < len(ids)


async def test_the_heartbeat_keeps_no_copy_of_the_cameras_stats_while_it_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Entries become JSON text as they are read: 10,000 cameras' copies (70,000 objects),
    alive until the thread had written them, set the garbage collector off for 0.1 s at a
    time on the event loop."""
    daemon = Daemon(make_config(tmp_path, {"CAM": "http://127.0.0.1:9/a.jpg"}))
    for i in range(600):
        daemon.stats.polled(daemon.stats.camera(f"C{i:04d}"))
    daemon.state.path.mkdir()
    write = daemon.state.write_health
    alive: list[int] = []

    def counting(record: dict[str, Any], cameras: list[str] | None = None) -> None:
        alive.append(sum(isinstance(o, CameraStats) for o in gc.get_objects()))
        write(record, cameras)

    monkeypatch.setattr(daemon.state, "write_health", counting)
    gc.collect()  # what earlier tests left
    before = sum(isinstance(o, CameraStats) for o in gc.get_objects())
    totals = await daemon._write_health()
    assert totals["polls"] == 600
    assert alive[0] - before <= 1  # the daemon-wide figures' copy (`every`), no camera's


def slow_recovery(data_dir: Path, seconds: float) -> FilesystemStorage:
    """The real store, each camera's start-up recovery taking `seconds` longer."""

    class SlowRecovery(FilesystemStorage):
        async def recover(self, camera_id: str) -> int:
            await asyncio.sleep(seconds)
            return await super().recover(camera_id)

    return SlowRecovery(data_dir)


def record_polls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, float, float]]:
    """(camera, due, when asked) of every poll from now on."""
    from lyoncam_daemon.capture.camera import CameraTask

    polls: list[tuple[str, float, float]] = []
    real_poll = CameraTask.poll_once

    async def noted(self: CameraTask, due: float | None = None) -> bool:
        assert due is not None
        polls.append((self.camera.id, due, asyncio.get_running_loop().time()))
        return await real_poll(self, due)

    monkeypatch.setattr(CameraTask, "poll_once", noted)
    return polls


async def test_phases_stay_spread_however_long_start_up_recovery_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each camera's schedule starts `phase` after one moment shared by all, not after its
    own recovery: recoveries wait their turn at start (10,000 cameras took tens of seconds),
    and anchored on them the phases stretched past one interval, so part of every minute
    was due at 1.4 times the rate of the rest for as long as the daemon ran (lateness p99
    9 s at 10,000 cameras)."""
    import lyoncam_daemon.capture.camera as camera_module

    monkeypatch.setattr(camera_module, "RECOVERIES_AT_ONCE", 1)  # one recovery at a time
    polls = record_polls(monkeypatch)
    dues: dict[str, list[float]] = {}
    ids = camera_ids(8)
    interval = 2.0
    async with CriterSimulator(ids, period=0.5) as sim:
        config = make_config(tmp_path, {i: sim.url(i) for i in ids}, interval=interval)
        daemon = Daemon(config, storage=slow_recovery(tmp_path, 0.15))
        task = asyncio.create_task(daemon.run())

        def twice_each() -> bool:
            dues.clear()
            for cid, due, _ in polls:
                dues.setdefault(cid, []).append(due)
            return len(dues) == len(ids) and all(len(d) >= 2 for d in dues.values())

        try:
            await until(twice_each, "two polls of every camera")
        finally:
            daemon.request_stop()
            assert await asyncio.wait_for(task, timeout=15) == 0
    # The second polls are on each camera's grid: one interval / cameras apart, in order.
    second = [dues[i][1] for i in ids]
    gaps = [b - a for a, b in itertools.pairwise(second)]
    assert gaps == pytest.approx([interval / len(ids)] * (len(ids) - 1), abs=1e-6), gaps


async def test_a_first_poll_late_by_more_than_an_interval_is_due_on_the_latest_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A recovery longer than the interval: the first poll is due at the grid's latest tick,
    so it has a whole interval to get a request turn instead of being skipped at once as if
    the daemon were overloaded."""
    polls = record_polls(monkeypatch)
    interval = 0.5
    async with CriterSimulator(["L"], period=0.2) as sim:
        config = make_config(tmp_path, {"L": sim.url("L")}, interval=interval)
        daemon = Daemon(config, storage=slow_recovery(tmp_path, 1.3))
        task = asyncio.create_task(daemon.run())
        try:
            await until(lambda: len(polls) >= 2, "two polls")
        finally:
            daemon.request_stop()
            assert await asyncio.wait_for(task, timeout=15) == 0
    asked = [(due, at) for _, due, at in polls]
    (first_due, first_at), (second_due, _) = asked[:2]
    assert 0 <= first_at - first_due < interval
    assert second_due - first_due == pytest.approx(interval)  # then on the grid
