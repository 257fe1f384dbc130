"""Helpers of the fleet tests (deploy/: the dashboard, the alert rules, a real Prometheus): a
daemon running against the simulator with its status endpoint on a free loopback port, and
the metric names a PromQL expression uses."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from lyoncam_daemon.capture.daemon import Daemon
from lyoncam_daemon.config import Config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"

#: `up` is made by Prometheus for every target, never served by the daemon.
FROM_PROMETHEUS = frozenset({"up"})
#: A quoted string in PromQL: label values, which may hold anything.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"' + r"|'(?:[^'\\]|\\.)*'")
#: A metric name: lyoncam's and prometheus-client's process families, and `up`. Not part of
#: a longer word, not a function call.
_NAME = re.compile(r"(?<![\w:$])(lyoncam_\w+|process_\w+|up)\b(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana query with $variables) reads."""
    return set(_NAME.findall(_STRING.sub('""', expr)))


def served_names(exposition: str) -> set[str]:
    """Every sample name of a /metrics body: `_total`, `_bucket`, `_count`, `_sum` included."""
    return {sample.name for family in text_string_to_metric_families(exposition)
            for sample in family.samples}


@asynccontextmanager
async def running(config: Config) -> AsyncIterator[tuple[Daemon, str]]:
    """A daemon in this event loop with its endpoint on a free loopback port (status port 0
    in `config`); yields it and the base URL, and stops it as SIGTERM would."""
    daemon = Daemon(config)
    task = asyncio.create_task(daemon.run())
    while daemon.registry is None:  # set once the endpoint is up and cameras start
        if task.done():
            raise AssertionError(f"the daemon exited {task.result()} before starting")
        await asyncio.sleep(0.02)
    assert daemon.status is not None
    try:
        yield daemon, f"http://127.0.0.1:{daemon.status.port}"
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, timeout=30) == 0


async def scrape(base: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


async def until(condition: object, what: str, limit: float = 30.0) -> None:
    """Poll `condition()` (truthy when done) every 50 ms, failing after `limit` seconds."""
    assert callable(condition)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"no {what} after {limit:g} s")
        await asyncio.sleep(0.05)
