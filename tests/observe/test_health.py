"""`lyoncam health`: the heartbeat the daemon writes, judged as Docker's HEALTHCHECK does."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from lyoncam_daemon.capture.daemon import Daemon
from lyoncam_daemon.cli import main
from lyoncam_daemon.devtools.simulator import CriterSimulator, camera_ids
from lyoncam_daemon.observe.health import judge_health
from tests.conftest import make_config


def test_a_fresh_heartbeat_is_healthy_a_stale_one_is_not() -> None:
    record = {"heartbeat_unix": 1000.0, "heartbeat_every_s": 10.0, "stopping": False}
    assert judge_health(record, now=1040.0) is None
    problem = judge_health(record, now=1051.0)  # 2 missed beats + 30 s slack
    assert problem is not None and problem.startswith("heartbeat 51 s old (limit 50 s)")


def test_a_stopping_daemon_or_a_record_without_heartbeat_is_unhealthy() -> None:
    assert judge_health({"heartbeat_unix": 1000.0, "stopping": True}, 1000.0) \
        == "the daemon is stopping"
    assert judge_health({"stopping": False}, 1000.0) == "the health record has no heartbeat"


def test_health_of_a_data_dir_no_daemon_ever_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["health", "--data-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("unhealthy: ") and "no health record" in out


async def test_health_of_a_running_daemon_then_a_stopped_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    ids = camera_ids(1)
    async with CriterSimulator(ids, period=0.5) as sim:
        daemon = Daemon(make_config(tmp_path, {i: sim.url(i) for i in ids}))
        task = asyncio.create_task(daemon.run())
        health = tmp_path / ".lyoncam" / "health.json"
        while not health.exists():  # noqa: ASYNC110 - the daemon offers no event for it
            await asyncio.sleep(0.05)
        assert json.loads(health.read_text())["heartbeat_every_s"] == 1
        assert main(["health", "--data-dir", str(tmp_path)]) == 0
        # (structlog's default logger prints to stdout too: the answer is the last line)
        assert capsys.readouterr().out.splitlines()[-1].startswith("healthy: pid ")
        daemon.request_stop()
        assert await asyncio.wait_for(task, 15) == 0
    assert main(["health", "--data-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "unhealthy: the daemon is stopping"
    assert time.time() - json.loads(health.read_text())["heartbeat_unix"] < 60


async def test_the_health_command_asks_healthz_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fresh heartbeat is not enough when /healthz says the daemon cannot store."""
    from aiohttp import web

    state = tmp_path / ".lyoncam"
    state.mkdir()
    (state / "health.json").write_text(json.dumps(
        {"pid": 1, "heartbeat_unix": time.time(), "heartbeat_every_s": 300, "totals": {}}))
    answers = {"status": 200}

    async def healthz(request: web.Request) -> web.Response:
        if answers["status"] == 200:
            return web.json_response({"healthy": True})
        return web.json_response({"healthy": False, "reasons": ["writes failing: disk full"]},
                                 status=503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        args = ["health", "--data-dir", str(tmp_path), "--url", url]
        assert await asyncio.to_thread(main, args) == 0
        answers["status"] = 503
        assert await asyncio.to_thread(main, args) == 1
    finally:
        await runner.cleanup()
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("healthy: pid 1")
    assert out[1] == f"unhealthy: {url}: HTTP 503: writes failing: disk full"
    assert await asyncio.to_thread(main, args) == 1  # nobody listening any more
    assert capsys.readouterr().out.startswith(f"unhealthy: {url}: not answering")


async def test_the_health_command_asks_the_healthz_the_daemon_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """On any port (a free one, a shard's own): no --url needed, so the Docker image's
    health check follows the daemon wherever its endpoint listens."""
    config = make_config(tmp_path, {"CAM_A": "http://127.0.0.1:9/a.jpg"},
                         status="status:\n  port: 0", summary_interval=0.2)
    daemon = Daemon(config)
    task = asyncio.create_task(daemon.run())
    health = tmp_path / ".lyoncam" / "health.json"
    while not health.exists():  # noqa: ASYNC110 - the daemon offers no event for it
        await asyncio.sleep(0.05)
    try:
        assert daemon.status is not None
        recorded = json.loads(health.read_text())["status_url"]
        assert recorded == f"http://127.0.0.1:{daemon.status.port}/"
        # Nothing stored yet, but within its horizon: /healthz answers 200.
        assert await asyncio.to_thread(main, ["health", "--data-dir", str(tmp_path)]) == 0
        daemon.stats.storage_error = "cannot write frame of CAM_A under /x: disk full"
        assert await asyncio.to_thread(main, ["health", "--data-dir", str(tmp_path)]) == 1
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 15) == 0
    out = capsys.readouterr().out  # structlog's default logger prints there too
    assert (f"unhealthy: {recorded}healthz: HTTP 503: writes failing: "
            "cannot write frame of CAM_A under /x: disk full\n") in out
