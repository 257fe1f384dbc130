"""deploy/grafana/lyoncam.json and deploy/prometheus/alerts.yml name only metrics a running
daemon really serves: two daemons are scraped here against the simulator, one storing on
the filesystem (the disk guard's series) and one on S3 with its bucket out of reach (the
spool's series), and every name each panel, variable and rule reads must be among theirs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from lyoncam_daemon.devtools.simulator import CriterSimulator, camera_ids
from tests._fleet import (
    DEPLOY,
    FROM_PROMETHEUS,
    metric_names,
    running,
    scrape,
    served_names,
    until,
)
from tests.conftest import make_config

DASHBOARD = DEPLOY / "grafana" / "lyoncam.json"
RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def dashboard_queries() -> dict[str, list[str]]:
    """Every PromQL query of the dashboard, by where it is (panel title or variable)."""
    board = dashboard()
    queries: dict[str, list[str]] = {}
    for panel in panels(board):
        if panel["type"] != "row":
            queries[f"panel {panel['title']!r}"] = [t["expr"] for t in panel["targets"]]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            queries[f"variable ${var['name']}"] = [var["query"]["query"]]
    return queries


def rule_queries() -> dict[str, list[str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    queries = {f"rule {r['alert']}": [r["expr"]] for g in groups for r in g["rules"]}
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    queries["alerts_test.yml input series"] = [
        s["series"] for t in tests for s in t["input_series"]]
    return queries


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The sample names two running daemons serve (see the module's docstring)."""

    async def scrape_both() -> set[str]:
        tmp = tmp_path_factory.mktemp("daemons")
        ids = camera_ids(2)
        async with CriterSimulator(ids, period=0.3) as sim:
            urls = {i: sim.url(i) for i in ids}
            on_disk = make_config(tmp / "fs", urls, interval=0.2, status="status:\n  port: 0")
            # Port 9 on loopback: nothing answers, uploads fail, frames wait in the spool.
            on_s3 = make_config(tmp / "s3", urls, interval=0.2, status="status:\n  port: 0",
                                extra="storage:\n  kind: s3\n  endpoint: http://127.0.0.1:9\n"
                                      "  bucket: frames\n  timeout: 0.5")
            names: set[str] = set()
            for config in (on_disk, on_s3):
                async with running(config) as (daemon, base):
                    await until(lambda: daemon.stats.snapshot().every.polls >= 4, "polls")
                    names |= served_names(await scrape(base))
            return names

    with pytest.MonkeyPatch.context() as env:  # the S3 store reads its keys from here
        env.setenv("AWS_ACCESS_KEY_ID", "fleet-test")
        env.setenv("AWS_SECRET_ACCESS_KEY", "fleet-test")
        return asyncio.run(scrape_both())


def unknown_names(queries: dict[str, list[str]], served: set[str]) -> dict[str, set[str]]:
    missing = {}
    for where, exprs in queries.items():
        for expr in exprs:
            names = metric_names(expr)
            assert names, f"{where}: no metric name found in {expr!r}"
            if unknown := names - served - FROM_PROMETHEUS:
                missing[where] = unknown
    return missing


def test_the_daemons_served_both_storage_kinds_series(served: set[str]) -> None:
    assert {"lyoncam_disk_free_bytes", "lyoncam_disk_min_free_bytes",
            "lyoncam_spool_lag_seconds", "lyoncam_frames_total",
            "lyoncam_daemon_lateness_seconds_bucket"} <= served


def test_every_dashboard_query_names_a_metric_the_daemon_serves(served: set[str]) -> None:
    assert unknown_names(dashboard_queries(), served) == {}


def test_every_alert_rule_names_a_metric_the_daemon_serves(served: set[str]) -> None:
    assert unknown_names(rule_queries(), served) == {}


def test_a_misspelt_metric_is_caught(served: set[str]) -> None:
    """The check can fail: a name the daemon does not serve (the old camera family name)."""
    queries = {"panel 'x'": ['sum(rate(lyoncam_frames_stored_total{job=~"$job"}[5m]))']}
    assert unknown_names(queries, served) == {"panel 'x'": {"lyoncam_frames_stored_total"}}


def test_the_dashboard_shows_what_an_operator_watches() -> None:
    """Frames per camera and in all, errors by kind, lateness and fetch histograms, what
    makes polls late, skipped polls, spool and disk: each read by some panel."""
    used = set().union(*(metric_names(e) for exprs in dashboard_queries().values()
                         for e in exprs))
    assert {"lyoncam_frames_total", "lyoncam_daemon_frames_total", "lyoncam_poll_errors_total",
            "lyoncam_daemon_lateness_seconds_bucket", "lyoncam_daemon_fetch_seconds_bucket",
            "lyoncam_daemon_polls_skipped_total", "lyoncam_spool_lag_seconds",
            "lyoncam_spool_frames", "lyoncam_disk_free_bytes",
            "lyoncam_daemon_slot_wait_seconds_bucket",
            "lyoncam_daemon_pipeline_wait_seconds_bucket",
            "lyoncam_daemon_loop_lag_max_seconds"} <= used
    ids = [p["id"] for p in panels(dashboard())]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (camera) (rate(lyoncam_frames_total{outcome="stored"}[5m]))',
     {"lyoncam_frames_total"}),
    ('up{job=~".*lyoncam.*"} == 0', {"up"}),
    ('lyoncam_camera_up{camera="up"} == 0', {"lyoncam_camera_up"}),
    ("histogram_quantile(0.99, sum by (le) (rate(lyoncam_daemon_fetch_seconds_bucket[$__rate_"
     "interval])))", {"lyoncam_daemon_fetch_seconds_bucket"}),
    ("time() - lyoncam_last_stored_timestamp_seconds > 3600",
     {"lyoncam_last_stored_timestamp_seconds"}),
])
def test_metric_names_are_read_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_the_dashboard_file_is_importable_json_for_a_prometheus_data_source() -> None:
    board = dashboard()
    assert board["uid"] == "lyoncam" and board["title"] == "lyoncam"
    [source] = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert source["query"] == "prometheus"
    for panel in panels(board):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
