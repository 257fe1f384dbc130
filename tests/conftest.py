"""Shared fixtures: the real fixture frame and configs pointing at the simulated server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import structlog

from lyoncam_daemon.config import Config, parse_config
from lyoncam_daemon.daemon import Daemon

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Commands configure structlog process-wide; give every test the defaults back."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def night_frame() -> bytes:
    """A real CriTer frame: CWL9018, 1920x1080, 283,964 bytes."""
    return (FIXTURES / "CWL9018_night.jpg").read_bytes()


def make_config(
    data_dir: Path,
    urls: Mapping[str, str],
    *,
    interval: float = 0.3,
    timeout: float = 1.0,
    extra: str = "",
    per_camera: Mapping[str, str] | None = None,
    status: str = "status:\n  enabled: false",
) -> Config:
    """A config for fast tests: sub-second intervals (allowed through the test context).

    The status endpoint is off unless `status` says otherwise: tests never bind port 9120.
    """
    lines = [
        f"data_dir: {data_dir}",
        "shutdown_grace: 2",
        "log:\n  summary_interval: 1",
        "retry:\n  backoff_initial: 0.2\n  backoff_max: 0.4\n  down_after: 1\n"
        "  down_probe_interval: 0.4",
        extra,
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


def stored_frames(data_dir: Path, camera_id: str) -> list[Path]:
    return sorted((data_dir / camera_id).rglob(f"{camera_id}_*.jpg"))
