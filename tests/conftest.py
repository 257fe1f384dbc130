"""Shared fixtures: the real fixture frame and configs pointing at the simulated server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import structlog

from lyoncam_daemon.capture.daemon import Daemon
from lyoncam_daemon.config import Config, parse_config
from lyoncam_daemon.observe.logs import unroute_stdlib
from tests._seaweed import SeaweedS3

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Commands configure structlog process-wide; give every test the defaults back."""
    yield
    structlog.reset_defaults()
    unroute_stdlib()


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A real S3 server (SeaweedFS) on free loopback ports, one per test module that asks."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed"))
    server.start()
    try:
        asyncio.run(server.wait_ready())
        yield server
    finally:
        server.stop()


def make_config(
    data_dir: Path,
    urls: Mapping[str, str],
    *,
    interval: float = 0.3,
    timeout: float = 1.0,
    extra: str = "",
    per_camera: Mapping[str, str] | None = None,
    summary_interval: float = 1.0,
    retry: Mapping[str, float] | None = None,
    status: str = "status:\n  enabled: false",
) -> Config:
    """A config for fast tests: sub-second intervals (allowed through the test context).

    The status endpoint is off unless `status` says otherwise: tests never bind port 9120.
    """
    retry = {"backoff_initial": 0.2, "backoff_max": 0.4, "down_after": 1,
             "down_probe_interval": 0.4, **(retry or {})}
    lines = [
        f"data_dir: {data_dir}",
        "shutdown_grace: 2",
        f"log:\n  summary_interval: {summary_interval}",
        "retry:",
        *(f"  {key}: {value}" for key, value in retry.items()),
        extra,
        # Tests never reach the internet: weather is off unless a test points it at a stand-in.
        "" if "weather:" in extra else "weather:\n  enabled: false",
        status,
        "defaults:",
        f"  interval: {interval}",
        f"  timeout: {timeout}",
        "cameras:",
    ]
    for cam_id, url in urls.items():
        lines += [f"  - id: {cam_id}", f"    url: {url}"]
        if per_camera and cam_id in per_camera:
            lines += [f"    {line}" for line in per_camera[cam_id].splitlines()]
    return parse_config("\n".join(lines) + "\n", context={"min_interval": 0.05})


async def run_for(config: Config, seconds: float) -> Daemon:
    """Run a daemon in this event loop for `seconds`, then stop it as SIGTERM would."""
    daemon = Daemon(config)
    task = asyncio.create_task(daemon.run())
    await asyncio.sleep(seconds)
    daemon.request_stop()
    assert await asyncio.wait_for(task, timeout=15) == 0
    return daemon


async def run_until(config: Config, done: Callable[[Daemon], bool], what: str,
                    limit: float = 30.0, **daemon_kw: Any) -> Daemon:
    """Run a daemon until `done(daemon)` holds, then stop it as SIGTERM would.

    For tests of logic: they wait for the event they need, however slow the machine, and
    fail naming it after `limit` seconds, instead of counting what a fixed time gave.
    """
    daemon = Daemon(config, **daemon_kw)
    task = asyncio.create_task(daemon.run())
    try:
        await until(lambda: task.done() or done(daemon), what, limit)
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, timeout=15) == 0
    return daemon


def stored_frames(data_dir: Path, camera_id: str) -> list[Path]:
    return sorted((data_dir / camera_id).rglob(f"{camera_id}_*.jpg"))


async def until(condition: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    """Wait for an event, not for a fixed time; fail naming it after `limit` seconds."""
    for _ in range(int(limit / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
