"""A real Prometheus (Debian's package) on loopback scrapes a running daemon with
deploy/prometheus/alerts.yml loaded: every rule evaluates without error on the real series,
every dashboard query is valid PromQL there, and when a simulated camera stops answering its
LyoncamCameraDown alert is pending within the rule's window, then fires, for that camera
alone. The window is shortened in a copy of the rules (15 min is the shipped one)."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from lyoncam_daemon.devtools.simulator import CriterSimulator, camera_ids
from tests._fleet import DEPLOY, running
from tests.conftest import make_config
from tests.test_deploy_grafana import dashboard_queries
from tests.test_deploy_prometheus import tool

RULES = DEPLOY / "prometheus" / "alerts.yml"
#: The camera-down window of the rules copy: long enough to see `pending` first.
WINDOW_S = 20
#: Grafana's variables, as "All" and a 1-minute rate window would set them.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$job": ".*", "$instance": ".*",
                     "$camera": ".*"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rules_with_window(target: Path, alert: str, seconds: int) -> Path:
    """alerts.yml with one rule's `for:` shortened; every expression as shipped."""
    doc = yaml.safe_load(RULES.read_text())
    [rule] = [r for g in doc["groups"] for r in g["rules"] if r.get("alert") == alert]
    rule["for"] = f"{seconds}s"
    target.write_text(yaml.safe_dump(doc, sort_keys=False))
    return target


class PrometheusServer:
    """`prometheus` scraping one target every second, rules evaluated every second."""

    def __init__(self, folder: Path, target: str, rules: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.folder = folder
        config = folder / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": "lyoncam",
                                "static_configs": [{"targets": [target]}]}],
        }))
        self.log = folder / "prometheus.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [tool("prometheus"), f"--config.file={config}",
                 f"--storage.tsdb.path={folder / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    async def get(self, path: str, **params: str) -> Any:
        async with aiohttp.ClientSession() as http, \
                http.get(f"{self.url}{path}", params=params) as resp:
            body = await resp.json()
            assert resp.status == 200 and body["status"] == "success", body
            return body["data"]

    async def wait_ready(self) -> None:
        async def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited {self.process.returncode}:\n"
                                     + self.log.read_text()[-2000:])
            try:
                async with aiohttp.ClientSession() as http, \
                        http.get(f"{self.url}/-/ready") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        deadline = asyncio.get_running_loop().time() + 30
        while not await ready():
            assert asyncio.get_running_loop().time() < deadline, "prometheus never ready"
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


async def alerts(server: PrometheusServer, name: str) -> dict[str, str]:
    """camera → state (pending, firing) of the alert `name` now."""
    data = await server.get("/api/v1/alerts")
    return {a["labels"].get("camera", ""): a["state"]
            for a in data["alerts"] if a["labels"]["alertname"] == name}


@pytest.fixture
async def started(tmp_path: Path) -> AsyncIterator[tuple[CriterSimulator, PrometheusServer]]:
    ids = camera_ids(3)
    async with CriterSimulator(ids, period=1.0) as sim:
        config = make_config(tmp_path / "data", {i: sim.url(i) for i in ids}, interval=0.5,
                             status="status:\n  port: 0")
        async with running(config) as (_, base):
            rules = rules_with_window(tmp_path / "alerts.yml", "LyoncamCameraDown", WINDOW_S)
            server = PrometheusServer(tmp_path, base.removeprefix("http://"), rules)
            try:
                await server.wait_ready()
                yield sim, server
            finally:
                server.stop()


@pytest.mark.timeout(120)
async def test_a_camera_that_stops_answering_alerts_pending_then_firing_alone(
    started: tuple[CriterSimulator, PrometheusServer],
) -> None:
    sim, server = started

    # Scraped, every camera up, and every rule evaluated on the real series without error.
    async def all_up() -> bool:
        result = (await server.get("/api/v1/query", query="lyoncam_camera_up == 1"))["result"]
        return len(result) == 3

    await wait_async(all_up, "three cameras up in Prometheus")
    await wait_async(lambda: rules_evaluated(server), "every rule evaluated")
    assert await alerts(server, "LyoncamCameraDown") == {}

    broken = loop_time()
    sim.set_mode("SIM002", "error")  # HTTP 500 from now on: every poll fails

    await wait_async(lambda: alert_in(server, "pending"), "the alert pending")
    pending_after = loop_time() - broken
    assert pending_after < WINDOW_S, f"pending only after {pending_after:.1f} s"
    assert await alerts(server, "LyoncamCameraDown") == {"SIM002": "pending"}

    await wait_async(lambda: alert_in(server, "firing"), "the alert firing", limit=WINDOW_S + 20)
    assert loop_time() - broken >= WINDOW_S  # not before its window
    assert await alerts(server, "LyoncamCameraDown") == {"SIM002": "firing"}


@pytest.mark.timeout(120)
async def test_every_dashboard_query_is_valid_promql_in_prometheus(
    started: tuple[CriterSimulator, PrometheusServer],
) -> None:
    _, server = started
    for where, exprs in dashboard_queries().items():
        for expr in exprs:
            if expr.startswith("label_values("):  # a Grafana function, not PromQL
                expr = re.sub(r"label_values\((.*), \w+\)$", r"\1", expr)
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, (where, expr)
            try:
                await server.get("/api/v1/query", query=expr)
            except AssertionError as exc:
                raise AssertionError(f"{where}: {expr}: {exc}") from None


def loop_time() -> float:
    return asyncio.get_running_loop().time()


async def wait_async(check: Any, what: str, limit: float = 30.0) -> None:
    """Until the coroutine function `check` returns True."""
    deadline = loop_time() + limit
    while not await check():
        if loop_time() > deadline:
            raise AssertionError(f"no {what} after {limit:g} s")
        await asyncio.sleep(0.25)


async def rules_evaluated(server: PrometheusServer) -> bool:
    """Every rule evaluated at least once since the daemon's series arrived, none failing."""
    groups = (await server.get("/api/v1/rules"))["groups"]
    rules = [r for g in groups for r in g["rules"]]
    failing = [(r["name"], r.get("lastError")) for r in rules if r["health"] == "err"]
    assert not failing, failing
    return bool(rules) and all(r["health"] == "ok" for r in rules)


async def alert_in(server: PrometheusServer, state: str) -> bool:
    return (await alerts(server, "LyoncamCameraDown")).get("SIM002") == state
