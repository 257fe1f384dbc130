"""deploy/prometheus/alerts.yml checked by promtool (Debian's prometheus package; scripts/test.sh
installs it as root): the rules parse, and each behaves as deploy/prometheus/alerts_test.yml
says on series shaped like lyoncam's /metrics, firing after its window and not before."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"


def tool(name: str) -> str:
    """A Prometheus binary, or fail the test saying how to get it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install Debian's prometheus package (scripts/test.sh "
                    "does as root)", pytrace=False)
    return path


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *args], capture_output=True, text=True,
                          check=False, timeout=120, cwd=cwd)


def alert_names() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"]]


def test_the_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in result.stdout


def test_every_rule_behaves_as_its_unit_tests_say() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_that_sees_it_fire() -> None:
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert set(alert_names()) <= tested, set(alert_names()) - tested


def test_a_rule_that_fires_early_fails_its_unit_test(tmp_path: Path) -> None:
    """The unit tests can fail: a camera-down rule waiting 10 minutes instead of 15 does."""
    rules = RULES.read_text()
    broken = rules.replace("expr: lyoncam_camera_up == 0\n        for: 15m",
                           "expr: lyoncam_camera_up == 0\n        for: 10m")
    assert broken != rules
    (tmp_path / "alerts.yml").write_text(broken)
    shutil.copy(RULE_TESTS, tmp_path / "alerts_test.yml")
    result = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "alertname: LyoncamCameraDown, time: 16m" in result.stdout + result.stderr
